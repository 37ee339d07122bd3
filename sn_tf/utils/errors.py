"""The base of the errors sn_tf raises on purpose: bad input, data, flags or configuration.

    try:
        sn_tf.train(...)
    except sn_tf.SnTfError as err:      # a problem of the user's files or options
        print(err)                       # one line naming the file or option and the problem

Every such error class derives from :class:`SnTfError` (and keeps its older base,
``ValueError`` or ``Exception``, so existing ``except`` clauses still catch it); anything
else escaping sn_tf is a bug. The commands print an ``SnTfError`` as one line,
``sn_tf.<command>: error: <message>``, and exit 1 (2 for flags), never a traceback.
Each stage keeps its own subclass beside the code that raises it (``ConvertError``,
``ConfigError``, ``ExportError``, ...); BUILD_NOTES.md lists them.
"""


class SnTfError(Exception):
    """A problem of the user's input, data, flags or configuration, with a message that
    names the file or option and says what is wrong."""
