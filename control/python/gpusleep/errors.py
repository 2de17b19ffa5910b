"""The exceptions of gpusleep: one base class, GpusleepError (with .code), and one subclass per
error code, generated from the ERROR_CODES table below."""

# code -> (parent code or None, when it happens). The server's codes are those of
# docs/protocol.md (the library's table: preload/base/failure.h); the last rows are the
# client's own (nothing was asked, or no answer came).
# Adding a code is one row: its class is named after it (out_of_memory -> OutOfMemoryError).
ERROR_CODES = {
    "bad_request": (None, "the request is not JSON, not an object, or its envelope is wrong"),
    "unsupported_version": (None, "the process speaks another protocol version"),
    "unknown_op": (None, "the operation is not one the process knows"),
    "invalid_argument": (None, "a field of the wrong type or value, an unknown field, a bad tag"),
    "unknown_tag": (None, "a tag no region has ever had"),
    "invalid_rules": (None, "a rule set that does not parse"),
    "out_of_memory": (None, "wake: not enough device memory (details: device, needed_bytes, "
                            "free_bytes)"),
    "host_out_of_memory": (None, "sleep: not enough host memory for the mirrors"),
    "driver_error": (None, "the CUDA driver failed"),
    "message_too_large": (None, "the request line is too long"),
    "permission_denied": (None, "the process refused us: we are another user"),
    "busy": (None, "the process serves too many connections"),
    "gpu_busy": (None, "sleep: a thread stayed inside a GPU call too long; nothing slept"),
    "unavailable": (None, "the library manages nothing in this process"),
    "internal": (None, "a bug in the library; the process goes on"),
    "connection_failed": (None, "no answer: nothing listening, or the connection dropped"),
    "timed_out": ("connection_failed", "no reply within the timeout"),
    "unsafe_runtime_dir": (None, "the socket's directory is not private to this user; nothing "
                                 "was sent"),
    "untrusted_peer": (None, "the process behind the socket is another user's; nothing was sent"),
}


class GpusleepError(Exception):
    """A request failed. `code` is the protocol's error code (docs/protocol.md) or the client's
    own (connection_failed, timed_out, unsafe_runtime_dir, untrusted_peer); `message` says why,
    `details` holds the reply's extra fields (e.g. needed_bytes), `pid` the process."""

    code = "unknown"

    def __init__(self, message, details=None, pid=None, code=None):
        if code is not None:
            self.code = code
        self.message = message
        self.details = dict(details or {})
        self.pid = pid
        text = f"{self.code}: {message}"
        super().__init__(text if pid is None else f"pid {pid}: {text}")

    def __reduce__(self):  # pickles across processes (Ray, multiprocessing) with all its fields
        return (_rebuild, (self.code, self.message, self.details, self.pid))


def _class_name(code):
    return "".join(part.capitalize() for part in code.split("_")) + "Error"


def _make_classes():
    made = {}
    for code in ERROR_CODES:  # parents come before their children in the table
        parent, doc = ERROR_CODES[code]
        base = made[parent] if parent else GpusleepError
        made[code] = type(_class_name(code), (base,), {"code": code, "__doc__": doc,
                                                       "__module__": __name__})
    return made


_CLASSES = _make_classes()
globals().update({cls.__name__: cls for cls in _CLASSES.values()})


def error_class(code):
    """The exception class for an error code (GpusleepError for a code not in the table)."""
    return _CLASSES.get(code, GpusleepError)


def make_error(code, message, details=None, pid=None):
    """An exception of the class for `code`, carrying the code even when it is not in the table."""
    cls = error_class(code)
    return cls(message, details, pid, code=None if cls is not GpusleepError else code)


def _rebuild(code, message, details, pid):
    return make_error(code, message, details, pid)


__all__ = ["ERROR_CODES", "GpusleepError", "error_class", "make_error"] + [
    cls.__name__ for cls in _CLASSES.values()]
