/** The agent's pure JavaScript serial line (wire/serial-line.ts) on socat ptys. */
import t from 'tap';
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Duplex } from 'node:stream';
import { autoDetect } from '@serialport/bindings-cpp';
import { SerialPortStream } from '@serialport/stream';
import { SerialLineError, openSerialLine } from '../wire/serial-line';
import { openEndpoint, parseEndpoint } from '../wire/transport';
import { simulatedLine, socatPair } from './helpers/line-sim';
import { tempDir, waitFor } from './helpers/support';

const REPO = path.resolve(__dirname, '..');

function openWithSerialport(device: string): Promise<SerialPortStream> {
  const port = new SerialPortStream({ binding: autoDetect(), path: device, baudRate: 115200, autoOpen: false });
  return new Promise((resolve, reject) => port.open((error) => (error ? reject(error) : resolve(port))));
}

function closePort(port: SerialPortStream): Promise<void> {
  return new Promise((resolve) => (port.isOpen ? port.close(() => resolve()) : resolve()));
}

/** Reads until `n` bytes arrived; resolves with their sha256. */
function receive(stream: Duplex, n: number, timeoutMs = 20_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    let got = 0;
    const timer = setTimeout(() => reject(new Error(`only ${got} of ${n} bytes arrived`)), timeoutMs);
    const onData = (chunk: Buffer) => {
      hash.update(chunk);
      got += chunk.length;
      if (got >= n) {
        clearTimeout(timer);
        stream.off('data', onData);
        resolve(hash.digest('hex'));
      }
    };
    stream.on('data', onData);
  });
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Descriptors of this process that point at `target` (a /dev/pts/N). */
function fdsOn(target: string): string[] {
  return fs.readdirSync('/proc/self/fd').filter((fd) => {
    try {
      return fs.readlinkSync(`/proc/self/fd/${fd}`).startsWith(target);
    } catch {
      return false;
    }
  });
}

t.test('exchanges bytes with a peer opened by serialport, both ways at once', async (t) => {
  const pair = await socatPair();
  t.teardown(() => pair.close());
  const pts = fs.realpathSync(pair.a);
  const line = await openSerialLine(pair.a, { baud: 115200 });
  const peer = await openWithSerialport(pair.b);
  t.equal(line.bytesPerSecond, 11520);
  const toPeer = randomBytes(300_000);
  const toLine = randomBytes(200_000);
  const [atPeer, atLine] = await Promise.all([
    receive(peer, toPeer.length),
    receive(line, toLine.length),
    new Promise((r) => line.write(toPeer, r)),
    new Promise((r) => peer.write(toLine, r)),
  ]);
  t.equal(atPeer, sha(toPeer), 'line → serialport: every byte, in order');
  t.equal(atLine, sha(toLine), 'serialport → line: every byte, in order');

  // end(): what was written goes out, then the device is closed.
  const last = randomBytes(50_000);
  const arrived = receive(peer, last.length);
  const closed = new Promise((r) => line.once('close', r));
  line.end(last);
  t.equal(await arrived, sha(last), 'end() flushes first');
  await closed;
  t.same(fdsOn(pts), [], 'no descriptor left on the device');
  await closePort(peer);

  // The transport opens the same device again, and says what the line is.
  const opened = await openEndpoint(parseEndpoint(`serial:${pair.a}?baud=9600`));
  t.equal(opened.lossy, true);
  t.equal(opened.bytesPerSecond, 960);
  const again = await openWithSerialport(pair.b);
  const hello = receive(again, 5);
  opened.transport.write('hello');
  t.equal(await hello, sha(Buffer.from('hello')));
  opened.transport.destroy();
  await new Promise((r) => opened.transport.once('close', r));
  await closePort(again);
});

t.test('a device that is missing, not a terminal, or at a rate stty cannot set', async (t) => {
  await t.rejects(openSerialLine('/dev/ttyUSB9', { baud: 115200 }), {
    name: 'SerialLineError', code: 'ENOENT', message: 'serial device /dev/ttyUSB9 does not exist',
  });
  const file = path.join(await tempDir(t, 'tether-line-'), 'plain');
  fs.writeFileSync(file, 'x');
  await t.rejects(openSerialLine(file, { baud: 115200 }), { code: 'ENOTTY', message: /is not a serial device/ });
  await t.rejects(openSerialLine(file, { baud: 12345 }), { message: /12345 is not a baud rate/ });
  const pair = await socatPair();
  t.teardown(() => pair.close());
  const line = await openSerialLine(pair.a, { baud: 460800, rtscts: true });
  line.destroy();
  await new Promise((r) => line.once('close', r));
});

t.test('a device that goes away ends the line with a disconnect error', async (t) => {
  const pair = await socatPair();
  t.teardown(() => pair.close());
  const pts = fs.realpathSync(pair.a);
  const line = await openSerialLine(pair.a, { baud: 115200 });
  line.resume();
  const failed = new Promise<Error>((resolve) => line.once('error', resolve));
  const closed = new Promise((r) => line.once('close', r));
  await pair.stop();
  const error = await failed;
  t.ok(error instanceof SerialLineError);
  t.match(error, { disconnected: true, code: 'EGONE', message: `serial line ${pair.a} went away` });
  await closed;
  t.same(fdsOn(pts), [], 'no descriptor left on the device');
});

/** Spawns the writer child; resolves with its JSON lines as they come. */
function spawnWriter(device: string, mode: string, bytes: number, durationMs: number) {
  const child: ChildProcess = spawn(
    process.execPath,
    ['--import=@tapjs/typescript/import', path.join(REPO, 'test', 'helpers', 'serial-writer.ts'), device, mode, String(bytes), String(durationMs)],
    { cwd: REPO, stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, NODE_OPTIONS: '' } },
  );
  const lines: Array<Record<string, unknown> & { at: number }> = [];
  let buffer = '';
  child.stdout!.on('data', (d: Buffer) => {
    buffer += d.toString();
    for (let nl = buffer.indexOf('\n'); nl >= 0; nl = buffer.indexOf('\n')) {
      lines.push({ ...JSON.parse(buffer.slice(0, nl)), at: Date.now() });
      buffer = buffer.slice(nl + 1);
    }
  });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  return { child, lines, exited };
}

t.test('writing 1 MB to a slow line never stalls the event loop', async (t) => {
  // 115200 baud: 1 MB takes 91 s on the line. The writer's timer must keep firing meanwhile.
  const line = await simulatedLine({ baud: 115200 });
  t.teardown(() => line.close());
  const master = await openWithSerialport(line.masterPath);
  t.teardown(() => closePort(master));
  let received = 0;
  let firstAt = 0;
  master.on('data', (d: Buffer) => {
    if (!firstAt) firstAt = Date.now();
    received += d.length;
  });

  const writer = spawnWriter(line.agentPath, 'line', 1 << 20, 2500);
  t.teardown(() => writer.child.kill('SIGKILL'));
  await waitFor('the writer to report done', () => writer.lines.some((l) => l.done || l.error), { timeoutMs: 60_000, intervalMs: 20 });
  const done = writer.lines.find((l) => l.done || l.error)!;
  t.notOk(done.error, String(done.error ?? ''));
  const receivedAtDone = received;
  const seconds = (done.at - firstAt) / 1000;
  t.ok((done.maxGap as number) < 100, `the 10 ms timer never waited long (longest gap ${done.maxGap} ms)`);
  t.ok((done.ticks as number) >= 200, `it fired ${done.ticks} times in 2.5 s`);
  t.ok((done.pending as number) > 900_000, `most of the megabyte was still queued (${done.pending} bytes): the line is slow`);
  const rate = receivedAtDone / seconds;
  t.ok(Math.abs(rate - 11520) / 11520 < 0.05, `the master received at the line rate (${rate.toFixed(0)} B/s)`);
  await writer.exited;

  // The control: Node's tty.WriteStream makes writes blocking, and the same write stalls the loop.
  const control = spawnWriter(line.agentPath, 'tty-writestream', 1 << 20, 2500);
  t.teardown(() => control.child.kill('SIGKILL'));
  await waitFor('the control writer to start', () => control.lines.some((l) => l.ready || l.error), { timeoutMs: 60_000, intervalMs: 20 });
  const readyAt = control.lines.find((l) => l.ready)!.at;
  await new Promise((r) => setTimeout(r, 2000));
  const after = control.lines.filter((l) => l.at > readyAt && !l.ready);
  t.same(after, [], 'with tty.WriteStream the timer did not fire for 2 s (the test can see a stall)');
  control.child.kill('SIGKILL');
  await control.exited;
});
