/**
 * Hostile peers against a hub in a process of its own (bench/hostile-hub.ts)
 * over loopback, with that process's RSS before, at its peak and after (the
 * issue's figures were taken this way; the tests assert queue sizes
 * instead). Each attacker is an authenticated agent (it knows its worker's
 * secret):
 *
 *   ping flood     20 MiB of PINGs, never reading the replies
 *   no ACK         bad frames that each draw a REJECT (10 MiB), never acknowledging
 *   HEADER flood   65 000-byte HEADERs into a command whose consumer takes nothing
 *
 * and the hub must drop it with a clear reason and stay up.
 */
import { type ChildProcess, fork } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { MsgType } from '../wire/messages';
import { Peer } from '../test/helpers/wire-net';
import type { HostileReport, HostileRequest } from './hostile-hub';
import { type BenchOptions, MiB, RssSampler, round, settledMemory, since } from './lib';
import { sleep, withTimeout } from '../test/helpers/support';

export interface HostileRow {
  attack: string;
  /** What the attacker sent, MiB. */
  sentMiB: number;
  rssBeforeMB: number;
  rssPeakMB: number;
  rssAfterMB: number;
  seconds: number;
  /** V8's heap and Buffers in use after the attack and a full GC: what the hub still holds. */
  heapAfterMB: number;
  /** Why the hub ended the attacker's session. */
  outcome: string;
}

const SECRET = 'hostile-bench-secret';

function next(child: ChildProcess, type: HostileReport['type'], ms: number): Promise<HostileReport> {
  return withTimeout(
    new Promise<HostileReport>((resolve) => {
      const on = (m: HostileReport) => {
        if (m.type !== type) return;
        child.off('message', on);
        resolve(m);
      };
      child.on('message', on);
    }),
    ms,
    `the hostile hub's '${type}'`,
  );
}

async function attack(name: string, blockedCommand: boolean, run: (peer: Peer) => Promise<number>): Promise<HostileRow> {
  const script = path.join(__dirname, 'hostile-hub.js');
  if (!fs.existsSync(script)) throw new Error(`${script} is missing: run the benchmarks with npm run bench`);
  const child = fork(script, [], { execArgv: ['--expose-gc'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  try {
    const listening = next(child, 'listening', 30_000);
    child.send({ type: 'start', secret: SECRET, keepalive: 1, blockedCommand } satisfies HostileRequest);
    const { port } = (await listening) as Extract<HostileReport, { type: 'listening' }>;
    const pid = child.pid!;
    const before = (await settledMemory(pid, 500)).rss;
    const sampler = new RssSampler(pid, 20);
    const start = performance.now();
    const closed = next(child, 'closed', 120_000);
    const peer = await Peer.agent(port, 'bad', SECRET);
    peer.sendSequenced({ type: MsgType.INFO, info: { os: 'hostile' } });
    const sent = await run(peer);
    const { reason, heapMB } = (await closed) as Extract<HostileReport, { type: 'closed' }>;
    const seconds = round(since(start) / 1000, 1);
    const peak = sampler.stop().max;
    peer.destroy();
    await sleep(500);
    const after = (await settledMemory(pid, 500)).rss;
    return { attack: name, sentMiB: round(sent / MiB, 1), rssBeforeMB: round(before, 1), rssPeakMB: round(peak, 1), rssAfterMB: round(after, 1), heapAfterMB: heapMB, seconds, outcome: reason };
  } finally {
    child.kill('SIGKILL');
  }
}

/** Sends with `one` until `limit` bytes went or the hub closed the connection. */
async function until(peer: Peer, limit: number, one: (i: number) => void): Promise<number> {
  const start = peer.link.stats.bytesOut;
  for (let i = 0; peer.link.stats.bytesOut - start < limit && !peer.isClosed; i++) {
    one(i);
    if (i % 1000 === 999) await sleep(1);
  }
  return peer.link.stats.bytesOut - start;
}

export async function runHostile(opts: BenchOptions): Promise<HostileRow[]> {
  const rows = [
    await attack('PING flood, never reading the replies', false, async (peer) => {
      peer.socket.pause();
      return until(peer, 20 * MiB, (i) => peer.sendLink({ type: MsgType.PING, token: i % 0x10000 }));
    }),
    await attack('no ACK, every frame draws a REJECT', false, (peer) => until(peer, 10 * MiB, () => peer.sendBody(Buffer.from([MsgType.INFO])))),
    await attack('65 000-byte HEADERs into a command whose consumer takes nothing', true, async (peer) => {
      const started = (await peer.waitFor((m) => m.type === MsgType.START, 10_000, 'START')) as { stream: number };
      // As big as a frame takes (64 KiB of body).
      const text = 'x'.repeat(65_000);
      return until(peer, 256 * MiB, (i) => {
        peer.sendSequenced({ type: MsgType.HEADER, stream: started.stream, text });
        if (i % 16 === 15) peer.ack();
      });
    }),
  ];
  for (const r of rows) opts.log(`hostile: ${r.attack}: ${r.sentMiB} MiB sent, hub RSS ${r.rssBeforeMB} → peak ${r.rssPeakMB} → ${r.rssAfterMB} MB, heap in use after ${r.heapAfterMB} MB; ${r.outcome}`);
  return rows;
}
