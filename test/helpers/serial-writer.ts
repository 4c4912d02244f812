/**
 * A child process for the event-loop test: opens a serial device, writes a
 * large block to it at once, and reports how regularly a 10 ms timer fires
 * meanwhile. Run with the TypeScript loader:
 *
 *   node --import=@tapjs/typescript/import test/helpers/serial-writer.ts DEVICE MODE BYTES DURATION_MS
 *
 * MODE 'line' uses wire/serial-line.ts; 'tty-writestream' uses Node's
 * tty.WriteStream (blocking writes: the control that must stall). Prints one
 * JSON line per 100 ms ({ticks, maxGap, pending}), then {done: true, ...}.
 */
import * as fs from 'node:fs';
import * as tty from 'node:tty';
import type { Writable } from 'node:stream';
import { openSerialLine } from '../../wire/serial-line';

async function main(): Promise<void> {
  const [device, mode, bytesArg, durationArg] = process.argv.slice(2);
  const bytes = Number(bytesArg);
  const duration = Number(durationArg);
  let out: Writable;
  if (mode === 'line') {
    out = await openSerialLine(device, { baud: 115200 });
  } else {
    const fd = fs.openSync(device, fs.constants.O_RDWR | fs.constants.O_NOCTTY);
    out = new tty.WriteStream(fd);
  }
  out.on('error', () => undefined);
  let last = Date.now();
  let maxGap = 0;
  let ticks = 0;
  const started = Date.now();
  const report = (extra: Record<string, unknown> = {}) =>
    process.stdout.write(`${JSON.stringify({ ticks, maxGap, pending: out.writableLength, ...extra })}\n`);
  const timer = setInterval(() => {
    const now = Date.now();
    maxGap = Math.max(maxGap, now - last);
    last = now;
    ticks++;
    if (ticks % 10 === 0) report();
    if (now - started >= duration) {
      clearInterval(timer);
      report({ done: true, elapsed: now - started });
      process.exit(0);
    }
  }, 10);
  process.stdout.write(`${JSON.stringify({ ready: true })}\n`);
  out.write(Buffer.alloc(bytes, 0x55));
}

main().catch((error) => {
  process.stdout.write(`${JSON.stringify({ error: String(error) })}\n`);
  process.exit(1);
});
