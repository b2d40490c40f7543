"""Errors the lab raises."""


class LabUnavailable(RuntimeError):
    """This machine cannot run the lab (not root, tools missing, rootfs build failed)."""


class LabError(RuntimeError):
    """The lab was able to start but something in it went wrong."""
