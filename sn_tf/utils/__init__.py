"""Process-level helpers every stage may use (no sn_tf imports of their own).

``tfimport``: TensorFlow imported once, quietly, with sn_tf's settings; ``malloc``: glibc
malloc keeps freed memory (``sn_tf.keep_freed_memory``).
"""
