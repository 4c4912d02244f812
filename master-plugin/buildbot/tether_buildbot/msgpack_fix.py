"""Fixes for Buildbot's msgpack worker protocol, master side.

Buildbot 3.x's msgpack master (buildbot/worker/protocols/manager/msgpack.py,
class BuildbotWebSocketServerProtocol) has two handlers that drop what the
worker needs:

* ``call_update_read_file`` does ``yield file_reader.remote_read(length)`` but
  never keeps the result, so the response to the worker's ``update_read_file``
  request carries ``result: None``. The worker takes "no data" as end of file,
  so FileDownload / StringDownload / JSONStringDownload to any msgpack worker
  write EMPTY files.  The fix sends the bytes read back as the response's
  ``result`` (a msgpack ``bin``), which is what the worker's download loop
  expects (it stops when it gets an empty result).

* ``call_update_upload_file_utime`` calls
  ``file_writer.remote_utime('access_time', 'modified_time')`` with the two key
  NAMES (string literals) instead of a tuple of the two values, so every
  FileUpload with ``keepstamp=True`` fails with a TypeError.  The fix calls
  ``remote_utime((msg['access_time'], msg['modified_time']))``.

Each fix first *probes* the installed handler with a fake protocol object and
a fake reader/writer: it patches only if the handler shows exactly the known
bug, leaves it alone if it already behaves correctly (fixed upstream), and
leaves it alone (with a log message) if it behaves in any other way, so a
future Buildbot with a reworked handler is never overwritten with 3.x code.
Applying a fix twice is a no-op.
"""

from twisted.internet import defer
from twisted.python import log

PATCHED = 'patched'
ALREADY_PATCHED = 'already-patched'
UPSTREAM_FIXED = 'upstream-fixed'
UNRECOGNISED = 'unrecognised'
ABSENT = 'absent'

_MARK = '_tether_msgpack_fix'
_PROBE_DATA = b'tether-probe-\x00\xff'


def _protocol_class():
    try:
        from buildbot.worker.protocols.manager import msgpack as manager_msgpack
    except Exception:  # buildbot without msgpack support (or without msgpack/autobahn)
        return None
    return getattr(manager_msgpack, 'BuildbotWebSocketServerProtocol', None)


class _ProbeProtocol:
    """Just enough of BuildbotWebSocketServerProtocol for one handler call."""

    def __init__(self, readers=None, writers=None):
        self.command_id_to_command_map = {}
        self.command_id_to_reader_map = dict(readers or {})
        self.command_id_to_writer_map = dict(writers or {})
        self.responses = []

    def contains_msg_key(self, msg, keys):
        for k in keys:
            if k not in msg:
                raise KeyError(f'message did not contain obligatory "{k}" key')

    def send_response_msg(self, msg, result, is_exception):
        self.responses.append((result, bool(is_exception)))

    def maybe_log_master_to_worker_msg(self, message):
        pass

    def maybe_log_worker_to_master_msg(self, message):
        pass


class _ProbeReader:
    def remote_read(self, maxlength):
        return _PROBE_DATA[:maxlength]

    def remote_close(self):
        return None


class _ProbeWriter:
    def __init__(self):
        self.utime_calls = []

    def remote_utime(self, *args):
        self.utime_calls.append(args)

    def remote_write(self, data):
        return None

    def remote_close(self):
        return None


def _run_probe(handler, proto, msg):
    """Calls a handler synchronously; returns False if it could not be run."""
    try:
        d = handler(proto, msg)
    except Exception as e:
        log.msg(f'tether: msgpack fix probe raised {e!r}')
        return False
    if isinstance(d, defer.Deferred):
        failures = []
        d.addErrback(failures.append)
        if not d.called or failures:
            return False
    return True


@defer.inlineCallbacks
def _fixed_call_update_read_file(self, msg):
    result = None
    is_exception = False
    try:
        self.contains_msg_key(msg, ('command_id', 'length'))

        if msg['command_id'] not in self.command_id_to_reader_map:
            raise KeyError('unknown "command_id"')

        file_reader = self.command_id_to_reader_map[msg['command_id']]
        # the upstream handler forgets to keep this value
        result = yield file_reader.remote_read(msg['length'])
    except Exception as e:
        is_exception = True
        result = str(e)
    self.send_response_msg(msg, result, is_exception)


@defer.inlineCallbacks
def _fixed_call_update_upload_file_utime(self, msg):
    result = None
    is_exception = False
    try:
        self.contains_msg_key(msg, ('command_id', 'access_time', 'modified_time'))

        if msg['command_id'] not in self.command_id_to_writer_map:
            raise KeyError('unknown "command_id"')

        file_writer = self.command_id_to_writer_map[msg['command_id']]
        # upstream passes the two key names instead of a tuple of the values
        yield file_writer.remote_utime((msg['access_time'], msg['modified_time']))
    except Exception as e:
        is_exception = True
        result = str(e)
    self.send_response_msg(msg, result, is_exception)


setattr(_fixed_call_update_read_file, _MARK, True)
setattr(_fixed_call_update_upload_file_utime, _MARK, True)


def _classify_read_file(handler):
    proto = _ProbeProtocol(readers={'probe': _ProbeReader()})
    if not _run_probe(handler, proto, {'op': 'update_read_file', 'seq_number': 0,
                                       'command_id': 'probe', 'length': 1024}):
        return UNRECOGNISED
    if proto.responses == [(_PROBE_DATA, False)]:
        return UPSTREAM_FIXED
    if proto.responses == [(None, False)]:
        return 'buggy'
    return UNRECOGNISED


def _classify_upload_file_utime(handler):
    writer = _ProbeWriter()
    proto = _ProbeProtocol(writers={'probe': writer})
    if not _run_probe(handler, proto, {'op': 'update_upload_file_utime', 'seq_number': 0,
                                       'command_id': 'probe', 'access_time': 1.5,
                                       'modified_time': 2.5}):
        return UNRECOGNISED
    if proto.responses and not proto.responses[0][1] and \
            writer.utime_calls == [((1.5, 2.5),)]:
        return UPSTREAM_FIXED
    if writer.utime_calls == [('access_time', 'modified_time')]:
        return 'buggy'
    return UNRECOGNISED


def _apply(method_name, classify, replacement):
    cls = _protocol_class()
    if cls is None or not hasattr(cls, method_name):
        return ABSENT
    current = getattr(cls, method_name)
    if getattr(current, _MARK, False):
        return ALREADY_PATCHED
    state = classify(current)
    if state == 'buggy':
        setattr(cls, method_name, replacement)
        log.msg(f'tether: patched buildbot msgpack {cls.__name__}.{method_name}')
        return PATCHED
    if state == UNRECOGNISED:
        log.msg(f'tether: buildbot msgpack {cls.__name__}.{method_name} does not look like the '
                'known buggy version; left unchanged')
    return state


def fix_msgpack_read_file():
    """Makes FileDownload/StringDownload work with msgpack workers.

    Returns one of 'patched', 'already-patched', 'upstream-fixed',
    'unrecognised' (left alone) or 'absent' (no msgpack support).
    """
    return _apply('call_update_read_file', _classify_read_file, _fixed_call_update_read_file)


def fix_msgpack_upload_utime():
    """Makes FileUpload(keepstamp=True) work with msgpack workers. Same returns."""
    return _apply('call_update_upload_file_utime', _classify_upload_file_utime,
                  _fixed_call_update_upload_file_utime)


def fix_msgpack():
    """Applies every fix; returns {handler name: state}."""
    return {
        'call_update_read_file': fix_msgpack_read_file(),
        'call_update_upload_file_utime': fix_msgpack_upload_utime(),
    }
