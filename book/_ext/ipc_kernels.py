"""Sphinx extension: the chapters' kernels use IPC sockets, not TCP (see dlcourse.kernels).

myst-nb executes the chapters through jupyter-cache, which calls nbclient's ``execute``
without a way to configure the kernel manager; this extension wraps that one call to
pass the IPC configuration, with a fresh socket folder per chapter.
"""
import shutil
import tempfile


def _with_ipc(execute, folder):
    from dlcourse.kernels import ipc_kernel_config

    def execute_over_ipc(nb, *args, **kwargs):
        kwargs.setdefault("config", ipc_kernel_config(tempfile.mkdtemp(dir=folder)))
        return execute(nb, *args, **kwargs)
    execute_over_ipc.over_ipc = True
    return execute_over_ipc


def setup(app):
    import jupyter_cache.executors.utils as executors

    if not getattr(executors.executenb, "over_ipc", False):
        folder = tempfile.mkdtemp(prefix="dlk-")
        executors.executenb = _with_ipc(executors.executenb, folder)
        app.connect("build-finished", lambda app, exception: shutil.rmtree(folder, ignore_errors=True))
    return {"parallel_read_safe": True, "parallel_write_safe": True}
