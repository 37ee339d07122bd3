"""A module-level worker for tests of ``sn_tf.dataset.converter._pool_run`` (spawned processes
import it by name, so it cannot live inside a test function)."""


def chatty(index: int, messages: int, fail: bool) -> int:
    """Report ``messages`` progress ticks through the worker queue, then return or raise."""
    from sn_tf.dataset import converter

    for k in range(messages):
        converter._progress_queue.put((f"tile{index}-{k}", "ok"))
    if fail:
        raise RuntimeError(f"shard {index} failed")
    return index
