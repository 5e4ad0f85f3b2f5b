# The Python side of qtune's --post_process (embedded in the qtune binary and
# run as `python3 -B -c <this file> SCRIPT`). It imports SCRIPT once and then
# applies its PostProcess(data) to every request read from stdin. The
# protocol is described in crates/qtune-mixed/src/post_process.rs; all
# integers are little endian.
import io
import os
import struct
import sys
import traceback

# How many lines of a user traceback travel back to qtune.
TRACEBACK_LINES = 12
# The element types qtune reads (float64 is narrowed to float32 by qtune).
ACCEPTED = ("float32", "float64", "int64", "int32", "bool", "uint8", "int8")


def main():
    script = sys.argv[1]
    # The protocol runs over private duplicates of fd 0 and fd 1. Then fd 0
    # reads /dev/null and fd 1 writes to stderr, so that prints from the
    # user's code, at the Python or the C level, cannot corrupt the protocol.
    proto_in = os.fdopen(os.dup(0), "rb")
    proto_out = os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def send(frame):
        proto_out.write(frame)
        proto_out.flush()

    def send_error(kind, message):
        data = message.encode("utf-8", "replace")
        send(b"E" + kind + struct.pack("<I", len(data)) + data)

    def user_traceback():
        # Keep the user's frames only: drop the driver's (`<string>`, as it
        # runs with -c) and importlib's (`<frozen ...>`).
        kind, value, tb = sys.exc_info()
        frames = [
            frame
            for frame in traceback.extract_tb(tb)
            if not frame.filename.startswith(("<frozen", "<string>"))
        ]
        text = "".join(traceback.format_list(frames) + traceback.format_exception_only(kind, value))
        lines = text.rstrip().splitlines()[-TRACEBACK_LINES:]
        return "\n".join(["Traceback (most recent call last):"] + lines if frames else lines)

    try:
        import numpy as np
    except BaseException as e:
        send_error(b"N", "%s: %s (interpreter %s)" % (type(e).__name__, e, sys.executable))
        return 1

    if not os.path.isfile(script):
        send_error(b"M", "no such file")
        return 1
    import importlib.machinery
    import importlib.util

    # TPU-MLIR names the module after the file (its basename without `.py`).
    # The script's folder goes first on sys.path so it can import helpers
    # that sit beside it.
    name = os.path.splitext(os.path.basename(script))[0]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    try:
        loader = importlib.machinery.SourceFileLoader(name, script)
        spec = importlib.util.spec_from_file_location(name, script, loader=loader)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        loader.exec_module(module)
    except BaseException:
        send_error(b"I", user_traceback())
        return 1
    function = getattr(module, "PostProcess", None)
    if function is None:
        send_error(b"F", "the script defines no `PostProcess`")
        return 1
    if not callable(function):
        send_error(b"F", "`PostProcess` is of type %s, not a function" % type(function).__name__)
        return 1
    info = ("Python %s, numpy %s" % (sys.version.split()[0], np.__version__)).encode()
    send(b"R" + struct.pack("<I", len(info)) + info)

    def read_exact(n):
        data = proto_in.read(n)
        if data is None or len(data) != n:
            raise EOFError
        return data

    def encode(key, value):
        # Numpy scalars (np.float32(3.0), ...) are accepted as 0-d arrays.
        if not isinstance(value, (np.ndarray, np.generic)):
            return None, "value of `%s` is of type %s, not a numpy array" % (key, type(value).__name__)
        array = np.asarray(value)
        if array.dtype.name not in ACCEPTED:
            return None, "D"
        if array.dtype.byteorder == ">":
            array = array.astype(array.dtype.newbyteorder("<"))
        # Row-major data for qtune (np.ascontiguousarray would turn a 0-d
        # array into a 1-d one).
        if not array.flags.c_contiguous:
            array = array.copy(order="C")
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, array, allow_pickle=False)
        return buffer.getvalue(), None

    while True:
        tag = proto_in.read(1)
        if not tag:
            return 0  # qtune closed our stdin: a clean shutdown.
        if tag != b"Q":
            send_error(b"P", "unexpected request tag %r" % tag)
            return 2
        try:
            (count,) = struct.unpack("<I", read_exact(4))
            data = {}
            for _ in range(count):
                (name_len,) = struct.unpack("<I", read_exact(4))
                key = read_exact(name_len).decode("utf-8")
                (payload_len,) = struct.unpack("<Q", read_exact(8))
                payload = io.BytesIO(read_exact(payload_len))
                data[key] = np.lib.format.read_array(payload, allow_pickle=False)
        except EOFError:
            return 2  # qtune went away mid-request; nobody is listening.
        except Exception as e:
            send_error(b"P", "cannot read the request: %s: %s" % (type(e).__name__, e))
            return 2

        try:
            result = function(data)
        except BaseException:
            send_error(b"X", user_traceback())
            continue
        if not isinstance(result, dict):
            send_error(b"T", "it returned a value of type %s, not a dict" % type(result).__name__)
            continue
        frames = [b"O", struct.pack("<I", len(result))]
        problem = None
        for key, value in result.items():
            if not isinstance(key, str):
                problem = (b"T", "key %r is of type %s, not str" % (key, type(key).__name__))
                break
            payload, error = encode(key, value)
            if error == "D":
                problem = (b"D", "%s\n%s" % (key, np.asarray(value).dtype))
                break
            if error is not None:
                problem = (b"T", error)
                break
            name = key.encode("utf-8")
            frames += [struct.pack("<I", len(name)), name, struct.pack("<Q", len(payload)), payload]
        if problem is not None:
            send_error(*problem)
            continue
        send(b"".join(frames))


try:
    sys.exit(main())
except KeyboardInterrupt:
    # Ctrl-C reaches the whole process group; qtune reports it, not us.
    sys.exit(130)
