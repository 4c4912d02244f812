"""TetherService: runs `tether-master` next to a Buildbot master.

tether-master connects to this master as an ordinary worker (one websocket per
configured worker) over Buildbot's msgpack worker protocol and relays to
Tether agents. This service starts it, feeds it the worker names and passwords
on stdin (never on the command line), logs its output, restarts it when it
dies and when the workers change, and stops it with the master.
"""

import json
import os
import re
import shutil
import sys
from pathlib import Path

from twisted.internet import defer
from twisted.internet import error as twisted_error
from twisted.internet import protocol
from twisted.python import failure
from twisted.python import log
from zope.interface import implementer

from buildbot import config
from buildbot.interfaces import IConfigurator
from buildbot.util import service

from . import msgpack_fix

MSGPACK_PROTOCOL = 'msgpack_experimental_v7'
# tether-master's bounds (wire/handshake.ts): agents refuse a longer keepalive,
# and Node's timers cannot hold a much longer grace.
MAX_KEEPALIVE_SECONDS = 3600
MAX_GRACE_SECONDS = 24 * 3600

# <checkout>/master-plugin/buildbot/tether_buildbot/service.py -> <checkout>
CHECKOUT = Path(__file__).resolve().parents[3]
DEFAULT_SCRIPT = CHECKOUT / 'bin' / 'tether-master.js'

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0
# a child that ran at least this long before dying restarts after BACKOFF_FIRST again
BACKOFF_RESET_AFTER = 60.0


# What must not reach twistd.log raw (as wire/printable.ts): controls (C0, DEL, C1), line and
# paragraph separators, bidi controls. tether-master escapes its own lines; this covers anything
# else it may print (a crash), so that no output can colour or reorder the log.
_UNSAFE = re.compile('[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]')
_SHORT = {'\n': '\\n', '\r': '\\r', '\t': '\\t'}


def _printable(text):
    def escape(match):
        c = match.group()
        return _SHORT.get(c) or (f'\\x{ord(c):02x}' if ord(c) < 0x100 else f'\\u{ord(c):04x}')
    return _UNSAFE.sub(escape, text)


def _protocol_problem(protocols):
    """Returns a description of what is wrong with c['protocols'], or None."""
    if not isinstance(protocols, dict) or MSGPACK_PROTOCOL not in protocols:
        return (f"TetherService needs Buildbot's msgpack worker protocol: add "
                f"c['protocols'] = {{'{MSGPACK_PROTOCOL}': {{'port': 9989}}}} "
                f"(any free port) to master.cfg; tether-master connects to it as a worker")
    options = protocols[MSGPACK_PROTOCOL]
    if not isinstance(options, dict) or 'port' not in options:
        return f"TetherService: c['protocols']['{MSGPACK_PROTOCOL}'] needs a 'port'"
    try:
        int(options['port'])
    except (TypeError, ValueError):
        return (f"TetherService: c['protocols']['{MSGPACK_PROTOCOL}']['port'] must be a port "
                f"number, not {options['port']!r}")
    return None


@implementer(IConfigurator)
class _ConfigCheck:
    """Checks the whole master.cfg once it has been read (run by MasterConfig.loadFromDict
    before anything else), so the check does not depend on the order of lines in master.cfg."""

    def configure(self, config_dict):
        problem = _protocol_problem(config_dict.get('protocols', {}))
        if problem:
            config.error(problem)


def _find_master_cfg_dict():
    """The BuildmasterConfig dict of the master.cfg being executed, if we are called from one."""
    frame = sys._getframe(1)
    while frame is not None:
        g = frame.f_globals
        candidate = g.get('BuildmasterConfig')
        if isinstance(candidate, dict) and g.get('__name__') != __name__:
            return candidate
        frame = frame.f_back
    return None


def _secret_masker(secrets):
    """A function that replaces every secret in a text with '<secret hidden>'.

    Every secret that is not blank, however short (as Buildbot's own
    cleanupTextFromSecrets does): a secret must never reach the log, and a
    short one only costs readability. One pass, longest secret first, so that
    a secret containing another is hidden whole and a placeholder is never
    rewritten.
    """
    wanted = sorted({s for s in secrets if s.strip()}, key=len, reverse=True)
    if not wanted:
        return lambda text: text
    pattern = re.compile('|'.join(re.escape(s) for s in wanted))
    return lambda text: pattern.sub('<secret hidden>', text)


class _ChildProtocol(protocol.ProcessProtocol):
    def __init__(self, owner, stdin_bytes, mask):
        self.owner = owner
        self.stdin_bytes = stdin_bytes
        self._mask = mask
        self.buffers = {'stdout': b'', 'stderr': b''}
        self.ended = defer.Deferred()
        self.pid = None

    def connectionMade(self):
        self.pid = self.transport.pid
        self.transport.write(self.stdin_bytes)
        self.transport.closeStdin()

    def _emit(self, stream, line):
        text = line.decode('utf-8', 'replace').rstrip('\r')
        tag = '' if stream == 'stdout' else ' (stderr)'
        log.msg(f'tether:{tag} {_printable(self._mask(text))}')

    def _received(self, stream, data):
        buf = self.buffers[stream] + data
        lines = buf.split(b'\n')
        self.buffers[stream] = lines.pop()
        if len(self.buffers[stream]) > 65536:  # a runaway line: log it in pieces
            lines.append(self.buffers[stream])
            self.buffers[stream] = b''
        for line in lines:
            self._emit(stream, line)

    def outReceived(self, data):
        self._received('stdout', data)

    def errReceived(self, data):
        self._received('stderr', data)

    def processEnded(self, reason):
        for stream, rest in self.buffers.items():
            if rest:
                self._emit(stream, rest)
        self.buffers = {'stdout': b'', 'stderr': b''}
        # reason is a Failure (ProcessDone / ProcessTerminated): pass its value,
        # as a Failure would send the Deferred down the errback chain
        self.ended.callback(reason.value)


class TetherService(service.BuildbotService):
    """Starts and supervises tether-master.

    listen:     list of URLs for tether-master to accept agents on (each becomes --listen URL)
    command:    argv prefix that starts tether-master (default: [node, <checkout>/bin/tether-master.js])
    node:       node binary for the default command (default 'node', looked up on PATH)
    cert, key:  TLS certificate and key files, passed as --cert / --key
    keepalive:  whole seconds (1 to 3600), passed as --keepalive
    grace:      whole seconds (1 to 86400) a dropped agent's session is kept, passed as --grace
    extra_args: more arguments appended to the command line
    env:        extra environment variables for tether-master
    stop_timeout: seconds to wait after SIGTERM before SIGKILL
    """

    name = 'tether'

    def checkConfig(self, listen=None, command=None, node='node', cert=None, key=None,
                    keepalive=None, grace=None, extra_args=None, env=None, stop_timeout=5, **kwargs):
        if kwargs:
            config.error(f"TetherService: unknown argument(s) {', '.join(sorted(kwargs))}")
        def str_list(v):
            return isinstance(v, (list, tuple)) and all(isinstance(a, str) and a for a in v)

        if not str_list(listen) or not listen:
            config.error("TetherService: listen must be a non-empty list of URLs, "
                         "e.g. listen=['tcp://0.0.0.0:9991']")
        if command is not None and (not str_list(command) or not command):
            config.error("TetherService: command must be a non-empty list of strings")
        if not isinstance(node, str) or not node:
            config.error("TetherService: node must be the name or path of the node binary")
        if (cert is None) != (key is None):
            config.error("TetherService: cert and key go together")
        for name, value in (('cert', cert), ('key', key)):
            if value is not None and not isinstance(value, str):
                config.error(f"TetherService: {name} must be a file name")
        for name, value, most in (('keepalive', keepalive, MAX_KEEPALIVE_SECONDS), ('grace', grace, MAX_GRACE_SECONDS)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most):
                config.error(f"TetherService: {name} must be a whole number of seconds from 1 to {most}")
        if extra_args is not None and not str_list(extra_args):
            config.error("TetherService: extra_args must be a list of strings")
        if env is not None and (not isinstance(env, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in env.items())):
            config.error("TetherService: env must be a dict of strings")
        if not isinstance(stop_timeout, (int, float)) or stop_timeout < 0:
            config.error("TetherService: stop_timeout must be a number of seconds")

        # c['protocols'] may be set after this line of master.cfg: check the
        # complete config once it has been read.
        cfg = _find_master_cfg_dict()
        if cfg is not None:
            configurators = cfg.setdefault('configurators', [])
            if isinstance(configurators, list) and \
                    not any(isinstance(c, _ConfigCheck) for c in configurators):
                configurators.append(_ConfigCheck())

    def __init__(self, *args, **kwargs):
        self._settings = None
        self._child = None          # _ChildProtocol of the running child
        self._running_spec = None   # (argv, stdin) it was started with
        self._restart_call = None
        self._backoff = BACKOFF_FIRST
        self._started_at = None
        self._stopping = False
        self._sync_lock = defer.DeferredLock()
        super().__init__(*args, **kwargs)

    # configuration

    def reconfigService(self, listen=None, command=None, node='node', cert=None, key=None,
                        keepalive=None, grace=None, extra_args=None, env=None, stop_timeout=5):
        self._settings = dict(listen=list(listen), command=list(command) if command else None,
                              node=node, cert=cert, key=key, keepalive=keepalive, grace=grace,
                              extra_args=list(extra_args or []), env=dict(env or {}),
                              stop_timeout=stop_timeout)
        return defer.succeed(None)

    @defer.inlineCallbacks
    def reconfigServiceWithSibling(self, sibling):
        # BuildbotService only calls reconfigService when our own arguments
        # changed; the workers live elsewhere in the config, so look every time.
        yield super().reconfigServiceWithSibling(sibling)
        if self.running:
            yield self._sync()

    def _msgpack_port(self):
        protocols = self.master.config.protocols
        problem = _protocol_problem(protocols)
        if problem:
            raise config.ConfigErrors([problem])
        port = int(protocols[MSGPACK_PROTOCOL]['port'])
        if port == 0:  # the OS picked one: ask the registrations
            for reg in getattr(self.master.workers, 'registrations', {}).values():
                msgpack_reg = getattr(reg, 'msgpack_reg', None)
                if msgpack_reg is not None:
                    try:
                        return msgpack_reg.getPort()
                    except Exception:
                        pass
            raise RuntimeError("TetherService: the msgpack port is 0 and no worker is "
                               "registered on it yet")
        return port

    @defer.inlineCallbacks
    def _workers(self):
        workers = []
        for w in self.master.config.workers:
            secret = yield self.renderSecrets(w.password)
            workers.append({'name': w.workername, 'secret': secret})
        return workers

    def _base_command(self):
        s = self._settings
        if s['command']:
            return list(s['command'])
        node = s['node']
        node_path = node if os.sep in node else shutil.which(node)
        if not node_path:
            raise RuntimeError(f"TetherService: cannot find '{node}' on PATH; "
                               f"pass node='/path/to/node' or command=[...]")
        return [node_path, str(DEFAULT_SCRIPT)]

    @defer.inlineCallbacks
    def _spec(self):
        s = self._settings
        argv = self._base_command()
        argv += ['--buildbot', f'ws://127.0.0.1:{self._msgpack_port()}']
        for url in s['listen']:
            argv += ['--listen', url]
        argv += ['--workers-file', '-']
        if s['cert'] is not None:
            argv += ['--cert', s['cert'], '--key', s['key']]
        for option in ('keepalive', 'grace'):
            if s[option] is not None:
                argv += [f'--{option}', str(s[option])]
        argv += s['extra_args']
        workers = yield self._workers()
        stdin = json.dumps({'workers': workers}).encode('utf-8') + b'\n'
        return argv, stdin, [w['secret'] for w in workers if isinstance(w['secret'], str)]

    # process supervision

    @defer.inlineCallbacks
    def _sync(self, after_crash=False):
        """Starts the child, or restarts it if what it should be started with changed."""
        yield self._sync_lock.acquire()
        try:
            if self._stopping:
                return
            argv, stdin, secrets = yield self._spec()
            if self._child is not None and self._running_spec == (argv, stdin):
                return
            if self._child is not None:
                log.msg('tether: configuration changed, restarting tether-master')
                yield self._stop_child()
            self._cancel_restart()
            if not after_crash:  # a deliberate (re)start: a new crash restarts quickly again
                self._backoff = BACKOFF_FIRST
            self._spawn(argv, stdin, secrets)
        finally:
            self._sync_lock.release()

    def _spawn(self, argv, stdin, secrets):
        from twisted.internet import reactor
        env = dict(os.environ)
        env.update(self._settings['env'])
        mask = _secret_masker(secrets)
        child = _ChildProtocol(self, stdin, mask)
        reactor.spawnProcess(child, argv[0], argv, env=env, path=self.master.basedir)
        self._child = child
        self._running_spec = (argv, stdin)
        self._started_at = reactor.seconds()
        # the workers file holds secrets: never log stdin; argv holds none, unless
        # the admin's command or extra_args put one there
        log.msg(f'tether: started tether-master (pid {child.pid}): {mask(" ".join(argv))}')
        child.ended.addCallback(self._child_ended, child)

    def _child_ended(self, value, child):
        from twisted.internet import reactor
        if child is not self._child:
            return  # a deliberate stop (_stop_child cleared _child first)
        self._child = None
        self._running_spec = None
        code = getattr(value, 'exitCode', None)
        sig = getattr(value, 'signal', None)
        how = f'signal {sig}' if sig else f'exit code {code}'
        if self._stopping or not self.running:
            return
        ran = reactor.seconds() - (self._started_at or 0)
        if ran >= BACKOFF_RESET_AFTER:
            self._backoff = BACKOFF_FIRST
        delay = self._backoff
        self._backoff = min(self._backoff * 2, BACKOFF_MAX)
        log.msg(f'tether: tether-master (pid {child.pid}) ended unexpectedly ({how}); '
                f'restarting in {delay:g}s')
        self._restart_call = reactor.callLater(delay, self._restart)

    def _restart(self):
        self._restart_call = None
        d = self._sync(after_crash=True)
        d.addErrback(self._restart_failed)

    def _restart_failed(self, why):
        from twisted.internet import reactor
        log.err(why, "tether: could not restart tether-master")
        if self.running and not self._stopping and self._restart_call is None:
            delay = self._backoff
            self._backoff = min(self._backoff * 2, BACKOFF_MAX)
            self._restart_call = reactor.callLater(delay, self._restart)

    def _cancel_restart(self):
        if self._restart_call is not None and self._restart_call.active():
            self._restart_call.cancel()
        self._restart_call = None

    @defer.inlineCallbacks
    def _stop_child(self):
        from twisted.internet import reactor
        child, self._child = self._child, None
        self._running_spec = None
        if child is None or child.ended.called:
            return
        ended = defer.Deferred()

        def on_end(result):
            if not ended.called:
                ended.callback(None)
            return result
        child.ended.addBoth(on_end)
        try:
            child.transport.signalProcess('TERM')
        except twisted_error.ProcessExitedAlready:
            pass
        timeout = self._settings['stop_timeout'] if self._settings else 5

        def kill():
            if not ended.called:
                log.msg(f'tether: tether-master (pid {child.pid}) ignored SIGTERM; killing it')
                try:
                    child.transport.signalProcess('KILL')
                except twisted_error.ProcessExitedAlready:
                    pass
        killer = reactor.callLater(timeout, kill)
        yield ended
        if killer.active():
            killer.cancel()
        log.msg(f'tether: tether-master (pid {child.pid}) stopped')

    @defer.inlineCallbacks
    def startService(self):
        msgpack_fix.fix_msgpack()
        self._stopping = False
        yield super().startService()
        try:
            yield self._sync()
        except config.ConfigErrors:
            raise
        except Exception:
            # e.g. node missing or the port not known yet: keep trying, like after a crash
            self._restart_failed(failure.Failure())

    @defer.inlineCallbacks
    def stopService(self):
        self._stopping = True
        self._cancel_restart()
        yield self._sync_lock.acquire()
        try:
            yield self._stop_child()
        finally:
            self._sync_lock.release()
        yield super().stopService()

