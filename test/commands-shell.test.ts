import t from 'tap';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { commands } from '../agent/commands/registry';
import { LogFileWatcher } from '../agent/commands/logwatcher';
import { RunProcess } from '../agent/commands/runprocess';
import { FakeIO } from './helpers/fake-io';
import { alive } from './helpers/processes';
import { tempDir, waitFor } from './helpers/support';

const shell = commands.shell;

/** Whether process `pid` is gone within `ms` (false: it still runs). */
function waitGone(pid: number, ms = 2000): Promise<boolean> {
  return waitFor(`pid ${pid} to be gone`, () => !alive(pid), { timeoutMs: ms, intervalMs: 20 }).then(() => true, () => false);
}

t.test('argv command: headers, output, rc, elapsed', async (t) => {
  const base = await tempDir(t, 'tether-shell-');
  const io = new FakeIO({ basedir: base });
  await shell(
    { workdir: 'wd', command: ['echo', 'hi there', '', "it's"], logEnviron: false, timeout: 1, maxTime: 10.5 },
    io,
  );
  const wd = path.join(base, 'wd');
  t.ok(fs.statSync(wd).isDirectory(), 'workdir created under basedir');
  t.equal(
    io.headerText.split('elapsedTime=')[0],
    `echo 'hi there' "" 'it'"'"'s'\n` +
      ` in dir ${wd} (timeout 1 sec) (maxTime 10.5 secs)\n` +
      ' watching logfiles {}\n' +
      ` argv: [b'echo', b'hi there', b'', b"it's"]\n` +
      ' using PTY: False\n',
  );
  t.match(io.headerText, /elapsedTime=\d+\.\d{6}\n$/);
  t.equal(io.bytes('stdout').toString(), "hi there  it's\n");
  t.equal(io.rc, 0);
  const elapsed = io.updates('elapsed');
  t.equal(elapsed.length, 1);
  t.type(elapsed[0], 'number');
  t.same(io.sequence.slice(-3), ['update:rc', 'header', 'update:elapsed'], 'rc, elapsedTime, elapsed last');
});

t.test('string command runs under /bin/sh -c; exit code passes through', async (t) => {
  const base = await tempDir(t, 'tether-shell-');
  const io = new FakeIO({ basedir: base });
  await shell({ workdir: '.', command: 'echo out; echo err >&2; exit 3', logEnviron: false }, io);
  t.equal(io.bytes('stdout').toString(), 'out\n');
  t.equal(io.bytes('stderr').toString(), 'err\n');
  t.equal(io.rc, 3);
  t.match(io.headerText, "echo out; echo err >&2; exit 3\n");
  t.match(io.headerText, ` argv: b'echo out; echo err >&2; exit 3'\n`);
});

t.test('raw bytes pass through undecoded', async (t) => {
  const base = await tempDir(t, 'tether-shell-');
  const io = new FakeIO({ basedir: base });
  await shell({ workdir: '.', command: "printf '\\377\\000\\376'", logEnviron: false }, io);
  t.same([...io.bytes('stdout')], [0xff, 0x00, 0xfe]);
});

t.test('killed by a signal: rc -1 and the signal header', async (t) => {
  const base = await tempDir(t, 'tether-shell-');
  const io = new FakeIO({ basedir: base });
  await shell({ workdir: '.', command: 'kill -9 $$', logEnviron: false }, io);
  t.equal(io.rc, -1);
  t.match(io.headerText, 'process killed by signal 9\n');
});

t.test('env: lists joined with ":", ${VAR} expanded, null removes, PYTHONPATH extended', async (t) => {
  const base = await tempDir(t, 'tether-shell-');
  process.env.TETHER_TEST_A = 'from-agent';
  process.env.TETHER_TEST_GONE = 'should-vanish';
  delete process.env.TETHER_TEST_UNSET;
  delete process.env.PYTHONPATH;
  t.teardown(() => {
    delete process.env.TETHER_TEST_A;
    delete process.env.TETHER_TEST_GONE;
  });
  const io = new FakeIO({ basedir: base });
  await shell(
    {
      workdir: 'w',
      command: [
        'sh',
        '-c',
        'echo "L=$L"; echo "X=$X"; echo "G=${TETHER_TEST_GONE-unset}"; echo "P=$PYTHONPATH"; echo "PWD=$PWD"',
      ],
      env: {
        L: ['/a', '/b', '/c'],
        X: 'pre-${TETHER_TEST_A}-${TETHER_TEST_UNSET}-post',
        TETHER_TEST_GONE: null,
        PYTHONPATH: ['lib1', 'lib2'],
      },
      logEnviron: true,
    },
    io,
  );
  t.equal(
    io.bytes('stdout').toString(),
    `L=/a:/b:/c\nX=pre-from-agent--post\nG=unset\nP=lib1:lib2:\nPWD=${path.join(base, 'w')}\n`,
  );
  t.equal(io.rc, 0);
  const env = io.headerText.split(' environment:\n')[1].split(' using PTY')[0];
  const at = (line: string) => env.indexOf(`\n  ${line}\n`);
  t.ok(env.startsWith('  '), 'two-space indented K=V lines');
  t.ok(at('L=/a:/b:/c') > 0);
  t.ok(at('PYTHONPATH=lib1:lib2:') > 0);
  t.ok(at(`PWD=${path.join(base, 'w')}`) > 0);
  t.ok(at('X=pre-from-agent--post') > 0);
  t.ok(at('L=/a:/b:/c') < at('PYTHONPATH=lib1:lib2:'), 'sorted by name');
  t.ok(at('PYTHONPATH=lib1:lib2:') < at('X=pre-from-agent--post'), 'sorted by name');
  t.notMatch(env, 'TETHER_TEST_GONE');
});

t.test('env: a non-string value fails the command like buildbot-worker', async (t) => {
  const base = await tempDir(t, 'tether-shell-');
  const io = new FakeIO({ basedir: base });
  await t.rejects(shell({ workdir: '.', command: 'true', env: { N: 5 } }, io), {
    name: 'CommandFailure',
    message: "RuntimeError: 'env' values must be strings or lists; key 'N' is incorrect",
  });
  t.equal(io.updates('elapsed').length, 1, 'elapsed still sent, as doStart does');
});

t.test('missing required args fail before start', async (t) => {
  const io = new FakeIO({ basedir: await tempDir(t, 'tether-shell-') });
  await t.rejects(shell({ command: 'true' }, io), {
    message: 'WorkerShellCommand is missing args: workdir',
  });
  t.same(io.events, []);
});

t.test('initial_stdin is written then stdin closed; without it stdin is closed', async (t) => {
  const base = await tempDir(t, 'tether-shell-');
  const io = new FakeIO({ basedir: base });
  await shell({ workdir: '.', command: ['cat'], initial_stdin: 'hello\nworld', logEnviron: false }, io);
  t.equal(io.bytes('stdout').toString(), 'hello\nworld');
  t.match(io.headerText, ' writing 11 bytes to stdin\n');
  t.equal(io.rc, 0);

  const io2 = new FakeIO({ basedir: base });
  await shell({ workdir: '.', command: ['cat'], logEnviron: false, timeout: 5 }, io2);
  t.equal(io2.bytes('stdout').length, 0, 'cat sees EOF at once');
  t.equal(io2.rc, 0);
});

t.test('stdin: true feeds io.readStdin() to the child', async (t) => {
  const base = await tempDir(t, 'tether-shell-');
  const io = new FakeIO({
    basedir: base,
    stdin: [Buffer.from('one\n'), Buffer.from('two\n')],
    stdinDelayMs: 20,
  });
  await shell({ workdir: '.', command: ['cat'], initial_stdin: 'zero\n', stdin: true, logEnviron: false }, io);
  t.equal(io.bytes('stdout').toString(), 'zero\none\ntwo\n');
  t.equal(io.rc, 0);
});

t.test('want_stderr false / want_stdout 0: that stream is not sent', async (t) => {
  const base = await tempDir(t, 'tether-shell-');
  const io = new FakeIO({ basedir: base });
  await shell({ workdir: '.', command: 'echo out; echo err >&2', want_stderr: false, logEnviron: false }, io);
  t.equal(io.bytes('stdout').toString(), 'out\n');
  t.equal(io.events.filter((e) => e.kind === 'stderr').length, 0);

  const io2 = new FakeIO({ basedir: base });
  await shell({ workdir: '.', command: 'echo out; echo err >&2', want_stdout: 0, logEnviron: false }, io2);
  t.equal(io2.events.filter((e) => e.kind === 'stdout').length, 0);
  t.equal(io2.bytes('stderr').toString(), 'err\n');
});

t.test('timeout: no output for N seconds kills the whole process group', async (t) => {
  const base = await tempDir(t, 'tether-shell-');
  const io = new FakeIO({ basedir: base });
  const started = Date.now();
  await shell(
    {
      workdir: '.',
      command: ['sh', '-c', 'echo started; sleep 30 & echo $! > gc.pid; wait'],
      timeout: 1,
      logEnviron: false,
    },
    io,
  );
  const took = Date.now() - started;
  t.ok(took >= 900 && took < 4000, `killed after about 1 s (${took} ms)`);
  t.match(
    io.headerText,
    `\ncommand timed out: 1 seconds without output running [b'sh', b'-c', b'echo started; sleep 30 & echo $! > gc.pid; wait'], attempting to kill\n`,
  );
  t.match(io.headerText, 'process killed by signal 9\n');
  t.equal(io.rc, -1);
  const gc = Number(fs.readFileSync(path.join(base, 'gc.pid'), 'utf8'));
  t.ok(gc > 0);
  t.ok(await waitGone(gc), `grandchild ${gc} is gone`);
});

t.test('timeout counts silence: regular output keeps the command alive', async (t) => {
  const base = await tempDir(t, 'tether-shell-');
  const io = new FakeIO({ basedir: base });
  await shell(
    { workdir: '.', command: 'for i in 1 2 3 4 5 6; do echo $i; sleep 0.3; done', timeout: 1, logEnviron: false },
    io,
  );
  t.equal(io.rc, 0);
  t.equal(io.bytes('stdout').toString(), '1\n2\n3\n4\n5\n6\n');
});

t.test('timeout does not count time spent waiting for the master to take output', async (t) => {
  const base = await tempDir(t, 'tether-shell-');
  // one byte of window and 1.5 s per chunk: 'b' waits until 1.5 s for credit
  const io = new FakeIO({ basedir: base, window: 1, consumeDelayMs: 1500 });
  const started = Date.now();
  await shell({ workdir: '.', command: 'printf a; sleep 0.2; printf b', timeout: 1, logEnviron: false }, io);
  t.ok(Date.now() - started >= 1400, 'the output was held back');
  t.notMatch(io.headerText, 'command timed out');
  t.equal(io.bytes('stdout').toString(), 'ab');
  t.equal(io.rc, 0);
});

t.test('an empty argv: the start error goes to stderr and the command fails', async (t) => {
  const io = new FakeIO({ basedir: await tempDir(t, 'tether-shell-') });
  await t.rejects(shell({ workdir: '.', command: [], logEnviron: false }, io), {
    message: "AbandonChain: (-1, 'Got exception (list index out of range)')",
  });
  t.match(io.bytes('stderr').toString(), /^error in RunProcess\._startCommand \(list index out of range\)\n/);
  t.equal(io.rc, undefined);
});

t.test('maxTime: total time limit, even with output', async (t) => {
  const base = await tempDir(t, 'tether-shell-');
  const io = new FakeIO({ basedir: base });
  const started = Date.now();
  await shell(
    { workdir: '.', command: 'while true; do echo tick; sleep 0.1; done', maxTime: 1, timeout: 10, logEnviron: false },
    io,
  );
  const took = Date.now() - started;
  t.ok(took >= 900 && took < 4000, `stopped after about 1 s (${took} ms)`);
  t.match(
    io.headerText,
    `\ncommand timed out: 1 seconds elapsed running b'while true; do echo tick; sleep 0.1; done', attempting to kill\n`,
  );
  t.match(io.headerText, ' (timeout 10 secs) (maxTime 1 sec)\n');
  t.equal(io.rc, -1);
  t.match(io.bytes('stdout').toString(), /^(tick\n)+$/);
});

t.test('sigtermTime: SIGTERM first, the process may clean up, then KILL', async (t) => {
  const base = await tempDir(t, 'tether-shell-');
  // traps TERM and exits cleanly: killed && rc == 0 -> rc -1, no signal header
  const io = new FakeIO({ basedir: base });
  await shell(
    {
      workdir: '.',
      command: ['sh', '-c', 'trap "echo term; exit 0" TERM; while :; do sleep 0.05; done'],
      maxTime: 0.5,
      sigtermTime: 1,
      logEnviron: false,
    },
    io,
  );
  t.equal(io.bytes('stdout').toString(), 'term\n');
  t.equal(io.rc, -1);
  t.notMatch(io.headerText, 'process killed by signal');

  // ignores TERM: KILLed sigtermTime later, together with its child
  const io2 = new FakeIO({ basedir: base });
  const started = Date.now();
  await shell(
    {
      workdir: '.',
      command: ['sh', '-c', 'trap "" TERM; sleep 30 & echo $! > gc2.pid; while :; do sleep 0.05; done'],
      maxTime: 0.5,
      sigtermTime: 0.5,
      logEnviron: false,
    },
    io2,
  );
  const took = Date.now() - started;
  t.ok(took >= 900 && took < 4000, `TERM at 0.5 s, KILL at 1 s (${took} ms)`);
  t.match(io2.headerText, 'process killed by signal 9\n');
  t.equal(io2.rc, -1);
  const gc = Number(fs.readFileSync(path.join(base, 'gc2.pid'), 'utf8'));
  t.ok(await waitGone(gc), 'grandchild gone');
});

t.test('timeout, maxTime and sigtermTime of 30 days, beyond what one Node timer holds (24.8 days): none fires at once', async (t) => {
  const base = await tempDir(t, 'tether-shell-');
  const month = 30 * 24 * 3600;
  const io = new FakeIO({ basedir: base });
  await shell({ workdir: '.', command: 'sleep 0.3; echo done', timeout: month, maxTime: month, logEnviron: false }, io);
  t.notMatch(io.headerText, 'timed out');
  t.equal(io.bytes('stdout').toString(), 'done\n');
  t.equal(io.rc, 0);

  // maxTime sends TERM; the process takes 0.3 s to clean up, well within its month.
  const io2 = new FakeIO({ basedir: base });
  await shell(
    {
      workdir: '.',
      command: ['sh', '-c', 'trap "sleep 0.3; echo cleaned; exit 0" TERM; while :; do sleep 0.05; done'],
      maxTime: 0.3,
      sigtermTime: month,
      logEnviron: false,
    },
    io2,
  );
  t.equal(io2.bytes('stdout').toString(), 'cleaned\n', 'not KILLed while it cleaned up');
  t.notMatch(io2.headerText, 'process killed by signal');
});

t.test('interrupt kills the process group with interruptSignal; no elapsed update', async (t) => {
  const base = await tempDir(t, 'tether-shell-');
  const io = new FakeIO({ basedir: base });
  io.onEvent = (e) => {
    if (e.kind === 'stdout' && e.data.toString().includes('ready')) io.interrupt('stop it');
  };
  await shell(
    {
      workdir: '.',
      command: ['sh', '-c', 'sleep 30 & echo $! > gc.pid; echo ready; wait'],
      interruptSignal: 'TERM',
      logEnviron: false,
    },
    io,
  );
  t.match(io.headerText, '\ncommand interrupted, attempting to kill\n');
  t.match(io.headerText, 'process killed by signal 15\n');
  t.equal(io.rc, -1);
  t.same(io.updates('elapsed'), [], "sendStatus is off after an interrupt");
  const gc = Number(fs.readFileSync(path.join(base, 'gc.pid'), 'utf8'));
  t.ok(await waitGone(gc), 'grandchild gone');
});

t.test('a background grandchild holding the pipes keeps the command until killed', async (t) => {
  const base = await tempDir(t, 'tether-shell-');
  const io = new FakeIO({ basedir: base });
  await shell({ workdir: '.', command: 'sleep 30 & echo $! > bg.pid', timeout: 1, logEnviron: false }, io);
  t.match(io.headerText, 'command timed out: 1 seconds without output');
  const gc = Number(fs.readFileSync(path.join(base, 'bg.pid'), 'utf8'));
  t.ok(await waitGone(gc), 'background process killed with the group');
});

t.test('logfiles are polled while the process runs and read a last time at exit', async (t) => {
  const base = await tempDir(t, 'tether-shell-');
  const saved = LogFileWatcher.POLL_INTERVAL;
  LogFileWatcher.POLL_INTERVAL = 0.1;
  t.teardown(() => {
    LogFileWatcher.POLL_INTERVAL = saved;
  });
  fs.mkdirSync(path.join(base, 'w'));
  fs.writeFileSync(path.join(base, 'w', 'old.log'), 'before\n');
  const io = new FakeIO({ basedir: base });
  let streamedEarly = false;
  io.onEvent = (e) => {
    if (e.kind === 'log' && e.name === 'main' && e.data.toString().includes('line1')) {
      // seen while the command is still sleeping (before 'line2' exists)
      streamedEarly = !fs.readFileSync(path.join(base, 'w', 'app.log'), 'utf8').includes('line2');
    }
  };
  await shell(
    {
      workdir: 'w',
      // follow: the first change is only noticed (the read starts at the size
      // then); what is appended after that is sent
      command:
        'echo line1 >> app.log; echo skipped >> old.log; sleep 0.6; echo line2 >> app.log; echo more >> old.log',
      logfiles: { main: 'app.log', tail: { filename: 'old.log', follow: true } },
      logEnviron: false,
    },
    io,
  );
  t.ok(streamedEarly, 'first line streamed during the run');
  t.equal(io.logBytes('main').toString(), 'line1\nline2\n');
  t.equal(io.logBytes('tail').toString(), 'more\n', 'follow: only what was appended');
  t.match(
    io.headerText,
    ` watching logfiles {'main': 'app.log', 'tail': {'filename': 'old.log', 'follow': True}}\n`,
  );
  const seq = io.sequence;
  t.ok(seq.lastIndexOf('log') < seq.indexOf('update:rc'), 'logs before rc');
});

t.test('flow control: a slow master slows the child; bytes arrive intact', async (t) => {
  const base = await tempDir(t, 'tether-shell-');
  const io = new FakeIO({ basedir: base, window: 64 * 1024, consumeDelayMs: 1 });
  const size = 4 * 1024 * 1024;
  await shell(
    {
      workdir: '.',
      command: `head -c ${size} /dev/urandom | tee data.bin | cat`,
      timeout: 5,
      logEnviron: false,
    },
    io,
  );
  t.equal(io.rc, 0);
  const out = io.bytes('stdout');
  t.equal(out.length, size);
  t.ok(out.equals(fs.readFileSync(path.join(base, 'data.bin'))), 'byte-exact');
  t.equal(io.maxPending.stdout, 1, 'never a second chunk before the first was accepted');
  t.ok(io.maxInFlight <= 128 * 1024, `in flight bounded (${io.maxInFlight})`);
});

t.test('a command that does not exist: rc 1 and the exec error on stderr', async (t) => {
  const base = await tempDir(t, 'tether-shell-');
  const io = new FakeIO({ basedir: base });
  await shell({ workdir: '.', command: ['tether-no-such-command', 'x'], logEnviron: false }, io);
  t.equal(io.rc, 1);
  t.match(
    io.bytes('stderr').toString(),
    /^Upon execvpe b'tether-no-such-command' \[b'tether-no-such-command', b'x'\] in environment id \d+\n:FileNotFoundError: \[Errno 2\] No such file or directory: b'tether-no-such-command'\n$/,
  );
});

t.test('obfuscated argv words: real one runs, fake one is shown', async (t) => {
  const base = await tempDir(t, 'tether-shell-');
  const io = new FakeIO({ basedir: base });
  await shell(
    { workdir: '.', command: ['echo', ['obfuscated', 's3cret', 'XXXX']], logEnviron: false },
    io,
  );
  t.equal(io.bytes('stdout').toString(), 's3cret\n');
  t.match(io.headerText, "echo XXXX\n");
  t.match(io.headerText, " argv: [b'echo', b'XXXX']\n");
  t.notMatch(io.headerText, 's3cret');
});

t.test('usePTY: runs on a pty via script(1) when available', async (t) => {
  const base = await tempDir(t, 'tether-shell-');
  const io = new FakeIO({ basedir: base });
  await shell({ workdir: '.', command: ['sh', '-c', 'test -t 1 && echo tty || echo notty'], usePTY: true, logEnviron: false }, io);
  const hasScript = fs.existsSync('/usr/bin/script') || fs.existsSync('/bin/script');
  if (hasScript) {
    t.match(io.headerText, ' using PTY: True\n');
    t.equal(io.bytes('stdout').toString().replace(/\r/g, ''), 'tty\n');
  } else {
    t.match(io.headerText, ' using PTY: False');
    t.equal(io.bytes('stdout').toString(), 'notty\n');
  }
  t.equal(io.rc, 0);

  // with initial_stdin the PTY is disabled, with buildbot-worker's warning
  const io2 = new FakeIO({ basedir: base });
  await shell({ workdir: '.', command: ['cat'], usePTY: true, initial_stdin: 'x', logEnviron: false }, io2);
  t.equal(io2.events[0].kind === 'header' && io2.events[0].text, 'WARNING: disabling usePTY for this command');
  t.match(io2.headerText, ' using PTY: False\n');
  t.equal(io2.bytes('stdout').toString(), 'x');
});

t.test('usePTY: an interrupt kills the command on the pty, not only script(1)', async (t) => {
  const hasScript = fs.existsSync('/usr/bin/script') || fs.existsSync('/bin/script');
  t.ok(hasScript, 'script(1) is installed (util-linux; test/preflight.js installs it)');
  if (!hasScript) return;
  const base = await tempDir(t, 'tether-shell-');
  const io = new FakeIO({ basedir: base });
  // Ignores the SIGHUP that the pty's closing sends: only a signal to its own group ends it.
  const run = shell({ workdir: '.', command: ['sh', '-c', 'trap "" HUP; echo $$ > pid; exec sleep 600'], usePTY: true, logEnviron: false }, io);
  const pidFile = path.join(base, 'pid');
  await waitFor('the command to write its pid', () => fs.existsSync(pidFile) && fs.readFileSync(pidFile, 'utf8').trim(), { timeoutMs: 10_000, intervalMs: 20 });
  const pid = Number(fs.readFileSync(pidFile, 'utf8'));
  t.teardown(() => {
    if (alive(pid)) process.kill(pid, 'SIGKILL');
  });
  io.interrupt('stop');
  await run;
  t.ok(await waitGone(pid, 5000), 'the command on the pty is gone');
});

t.test('usePTY without script(1) on PATH: runs without a PTY and says so', async (t) => {
  const base = await tempDir(t, 'tether-shell-');
  const io = new FakeIO({ basedir: base });
  await shell(
    {
      workdir: '.',
      command: ['/bin/sh', '-c', 'test -t 1 && echo tty || echo notty'],
      env: { PATH: path.join(base, 'empty-bin') },
      usePTY: true,
      logEnviron: false,
    },
    io,
  );
  t.match(io.headerText, 'WARNING: usePTY requested, but this agent has no script(1) to provide a PTY\n using PTY: False\n');
  t.equal(io.bytes('stdout').toString(), 'notty\n');
  t.equal(io.rc, 0);
});

t.test('the backup timeout gives up on a process that will not die', async (t) => {
  const base = await tempDir(t, 'tether-shell-');
  const saved = RunProcess.BACKUP_TIMEOUT;
  RunProcess.BACKUP_TIMEOUT = 0.3;
  t.teardown(() => {
    RunProcess.BACKUP_TIMEOUT = saved;
  });
  // interruptSignal CONT does not end anything
  const io = new FakeIO({ basedir: base });
  await t.rejects(
    shell({ workdir: '.', command: ['sh', '-c', 'echo $$ > me.pid; sleep 3'], timeout: 0.3, interruptSignal: 'CONT', logEnviron: false }, io),
    { message: 'RuntimeError: SIGCONT failed to kill process' },
  );
  t.match(io.headerText, 'SIGCONT failed to kill process\nusing fake rc=-1\n');
  t.equal(io.rc, -1);
  const pid = Number(fs.readFileSync(path.join(base, 'me.pid'), 'utf8'));
  process.kill(-pid, 'SIGKILL');
  t.ok(await waitGone(pid, 3000), 'the process is gone once its group is killed');
});

t.test("stdout and stderr are pipes, as buildbot-worker's, and stdin without input /dev/null: all three open by name", async (t) => {
  const base = await tempDir(t, 'tether-shell-');
  const io = new FakeIO({ basedir: base });
  const command = 'stat -L -c %F /dev/stdout /dev/stderr; cat /dev/stdin; echo out > /dev/stdout; echo err | tee /dev/stderr';
  await shell({ workdir: '.', command, logEnviron: false }, io);
  t.equal(io.bytes('stdout').toString(), 'fifo\nfifo\nout\nerr\n');
  t.equal(io.bytes('stderr').toString(), 'err\n');
  t.equal(io.rc, 0);
});

t.test('an interrupt that comes before the process is spawned kills it once it is', async (t) => {
  const base = await tempDir(t, 'tether-shell-');
  const io = new FakeIO({ basedir: base });
  const done = shell({ workdir: '.', command: ['sleep', '30'], logEnviron: false }, io);
  io.interrupt('stop it');
  await done;
  t.match(io.headerText, '\ncommand interrupted, attempting to kill\n');
  t.equal(io.rc, -1);
});

t.test('where no FIFO can be made, the agent is told why and commands run on socketpairs', async (t) => {
  const base = await tempDir(t, 'tether-shell-');
  // A process of its own, whose PATH has no mkfifo (the commands name sh by its path).
  const build = path.resolve(__dirname, '..', 'build', 'agent', 'commands');
  const script = `
    const { checkChildPipes } = require(${JSON.stringify(path.join(build, 'child-pipes.js'))});
    const { commands } = require(${JSON.stringify(path.join(build, 'registry.js'))});
    const out = [];
    const io = {
      basedir: ${JSON.stringify(base)}, signal: new AbortController().signal,
      update() {}, header() {}, stdout: async (c) => void out.push(c), stderr: async (c) => void out.push(c),
    };
    checkChildPipes().then(async (why) => {
      await commands.shell({ workdir: '.', command: ['/bin/sh', '-c', 'echo ran; echo x > /dev/stdout'], logEnviron: false }, io);
      console.log(JSON.stringify({ why, output: Buffer.concat(out).toString() }));
    });`;
  const result = spawnSync(process.execPath, ['-e', script], { env: { PATH: '/nonexistent' }, encoding: 'utf8', timeout: 20_000 });
  const { why, output } = JSON.parse(result.stdout) as { why: string; output: string };
  t.match(why, /^mkfifo: spawn mkfifo ENOENT/, 'the reason, for the agent log');
  t.match(output, /^ran\n.*No such device or address/s, 'the command runs, its stdout a socket (ENXIO by name)');
});

t.test('the pipes are closed with their command: no descriptor is left behind', async (t) => {
  const base = await tempDir(t, 'tether-shell-');
  const openFds = () => fs.readdirSync('/proc/self/fd').length;
  const run = (command: string) => shell({ workdir: '.', command, logEnviron: false }, new FakeIO({ basedir: base }));
  await run('true'); // the FIFO reserve is made
  const before = openFds();
  for (let i = 0; i < 30; i++) await run(i % 3 === 0 ? 'echo out; echo err >&2' : i % 3 === 1 ? 'exit 1' : 'kill -9 $$');
  await waitFor('descriptors to be closed', () => openFds() <= before, { timeoutMs: 2000, intervalMs: 20 });
  t.ok(openFds() <= before, `${openFds()} open, ${before} before`);
});

t.test("the FIFO directories of agents killed before they removed them are removed; a running process's are kept", async (t) => {
  const tmp = await tempDir(t, 'tether-tmp-');
  const dead = spawnSync('true').pid as number; // a process that has ended
  const stale = path.join(tmp, `tether-pipes-${dead}-abcdef`);
  const live = path.join(tmp, `tether-pipes-${process.pid}-abcdef`);
  const other = path.join(tmp, `tether-pipes-notapid-abcdef`);
  for (const dir of [stale, live, other]) {
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, '0'), '');
  }
  const module = path.resolve(__dirname, '..', 'build', 'agent', 'commands', 'child-pipes.js');
  const script = `require(${JSON.stringify(module)}).checkChildPipes().then((why) => console.log(JSON.stringify(why)))`;
  const result = spawnSync(process.execPath, ['-e', script], { env: { ...process.env, TMPDIR: tmp }, encoding: 'utf8', timeout: 20_000 });
  t.equal(result.stdout.trim(), 'null', 'FIFOs were made');
  t.notOk(fs.existsSync(stale), 'the dead agent\'s directory is gone');
  t.ok(fs.existsSync(live) && fs.existsSync(other), 'a running process\'s directory, and one not named after a process, are kept');
  t.same(fs.readdirSync(tmp).filter((n) => n.startsWith('tether-pipes-')).length, 2, 'the new process removed its own at exit');
});
