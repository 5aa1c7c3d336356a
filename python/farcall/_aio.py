"""asyncio support: ``await future`` on a farcall Future."""

import asyncio


def wrap(future):
    """An asyncio future of the running loop that follows ``future``."""
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()

    def copy_outcome(_):
        if waiter.done():
            return
        exc = future.exception()
        if exc is None:
            waiter.set_result(future.result())
        else:
            waiter.set_exception(exc)

    def done(_):
        try:
            loop.call_soon_threadsafe(copy_outcome, None)
        except RuntimeError:
            pass  # the loop is closed: nobody awaits any more

    future.add_done_callback(done)
    return waiter
