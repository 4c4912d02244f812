/** The line simulator (test/helpers/line-sim.ts): rate, backpressure, seeded noise, the cable. */
import t, { type Test } from 'tap';
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { Duplex } from 'node:stream';
import { openSerialLine } from '../wire/serial-line';
import { type LineSimOptions, Noise, memoryLine, simulatedLine } from './helpers/line-sim';

interface Arrival {
  /** When the n-th byte arrived (performance.now()). */
  at: number;
  data: Buffer;
  /** Every chunk's arrival: [time, bytes so far]. */
  log: Array<[number, number]>;
}

/**
 * The line's rate: the least-squares slope of bytes received over time, so
 * that neither start-up latency nor one late timer (a busy event loop) at the
 * end skews it; the simulator catches up after a late timer.
 */
function lineRate(r: Arrival): number {
  const n = r.log.length;
  let st = 0, sb = 0, stt = 0, stb = 0;
  for (const [time, bytes] of r.log) {
    st += time;
    sb += bytes;
    stt += time * time;
    stb += time * bytes;
  }
  return ((n * stb - st * sb) / (n * stt - st * st)) * 1000;
}

/** The most bytes that arrived ahead of a line that started sending at `started`. */
function maxAhead(r: Arrival, started: number, rate: number): number {
  return Math.max(...r.log.map(([time, bytes]) => bytes - ((time - started) * rate) / 1000));
}

/** Resolves when n bytes arrived: when the first and the last came, and the bytes. */
function arrival(stream: Duplex, n: number, timeoutMs = 30_000): Promise<Arrival> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    const log: Array<[number, number]> = [];
    let got = 0;
    const timer = setTimeout(() => reject(new Error(`only ${got} of ${n} bytes arrived`)), timeoutMs);
    const onData = (chunk: Buffer) => {
      parts.push(chunk);
      got += chunk.length;
      log.push([performance.now(), got]);
      if (got >= n) {
        clearTimeout(timer);
        stream.off('data', onData);
        resolve({ at: performance.now(), data: Buffer.concat(parts), log });
      }
    };
    stream.on('data', onData);
  });
}

t.test('the line holds 115200 baud (11 520 B/s) within 1 % in both directions', async (t) => {
  const { a, b, sim } = memoryLine({ baud: 115200 });
  t.teardown(() => sim.close());
  const n = 3 * 11520;
  const ab = randomBytes(n);
  const ba = randomBytes(n);
  const started = performance.now();
  const atB = arrival(b, n);
  const atA = arrival(a, n);
  a.write(ab);
  b.write(ba);
  const [rb, ra] = await Promise.all([atB, atA]);
  t.same(rb.data, ab, 'a → b: the bytes, unchanged');
  t.same(ra.data, ba, 'b → a: the bytes, unchanged');
  for (const [name, r] of [['a → b', rb], ['b → a', ra]] as const) {
    const rate = lineRate(r);
    const overall = n / ((r.at - started) / 1000);
    t.ok(Math.abs(rate - 11520) / 11520 < 0.01, `${name}: ${rate.toFixed(1)} B/s (${(((rate - 11520) / 11520) * 100).toFixed(2)} %; ${overall.toFixed(1)} B/s from the write to the last byte)`);
    t.ok(maxAhead(r, started, 11520) <= 1, `${name}: never ahead of the line`);
  }
});

/** A simulated line at 115200 baud with both of its pty ends opened as serial lines, closed after the test. */
async function openedLine(t: Test, options: LineSimOptions) {
  const line = await simulatedLine(options);
  t.teardown(() => line.close());
  const agent = await openSerialLine(line.agentPath, { baud: 115200 });
  const master = await openSerialLine(line.masterPath, { baud: 115200 });
  t.teardown(() => {
    agent.destroy();
    master.destroy();
  });
  return { line, agent, master };
}

t.test('the rate holds through ptys too, and idle time is not banked', async (t) => {
  const { agent, master } = await openedLine(t, { baud: 115200 });
  await new Promise((r) => setTimeout(r, 300)); // idle: the line must not send faster afterwards
  const n = 2 * 11520;
  const started = performance.now();
  const atMaster = arrival(master, n);
  const atAgent = arrival(agent, n);
  agent.write(randomBytes(n));
  master.write(randomBytes(n));
  const [rm, ra] = await Promise.all([atMaster, atAgent]);
  for (const [name, r] of [['agent → master', rm], ['master → agent', ra]] as const) {
    const rate = lineRate(r);
    const overall = n / ((r.at - started) / 1000);
    t.ok(Math.abs(rate - 11520) / 11520 < 0.01, `${name}: ${rate.toFixed(1)} B/s (${(((rate - 11520) / 11520) * 100).toFixed(2)} %; ${overall.toFixed(1)} B/s from the write to the last byte)`);
    t.ok(maxAhead(r, started, 11520) <= 1, `${name}: never ahead of the line, no burst after the idle time`);
  }
});

t.test('a sender is read no faster than the line sends (backpressure)', async (t) => {
  const { line, agent, master } = await openedLine(t, { baud: 115200, bufferBytes: 4096 });
  master.resume();
  let maxPending = 0;
  const sampler = setInterval(() => (maxPending = Math.max(maxPending, line.sim.pending('ab'))), 5);
  const started = performance.now();
  agent.write(randomBytes(1 << 20));
  await new Promise((r) => setTimeout(r, 1500));
  clearInterval(sampler);
  const seconds = (performance.now() - started) / 1000;
  const taken = line.sim.stats.ab.bytesIn;
  // Paused at 4096 bytes, the reading end may still hold what it read before (its readable
  // buffer, 16 KiB) and one more read of the pty: that much can reach the line at once.
  const burst = 4096 + 16384 + 4096;
  t.ok(maxPending <= burst, `at most the buffer, the reader's buffer and one read wait in the line (max ${maxPending})`);
  // What it took is what the line sent plus what waits in it: the same burst, not less.
  t.ok(taken < seconds * 11520 + burst, `the simulator took ${taken} bytes of 1 MB in ${seconds.toFixed(2)} s: the rest waits at the sender`);
  t.ok(agent.writableLength > 0, 'the sender sees the backpressure');
});

t.test('the same seed gives the same corruption, however the bytes are chunked', async (t) => {
  const data = randomBytes(200_000);
  const run = async (seed: number, chunk: number, noise: { bitErrorRate?: number; dropRate?: number }) => {
    const { a, b, sim } = memoryLine({ bytesPerSecond: Infinity, noise: { seed, ...noise }, bufferBytes: 1 << 30 });
    const expected = data.length;
    const parts: Buffer[] = [];
    b.on('data', (d: Buffer) => parts.push(d));
    for (let at = 0; at < data.length; at += chunk) a.write(data.subarray(at, at + chunk));
    const deadline = Date.now() + 10_000;
    while (sim.stats.ab.bytesIn < expected && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    await new Promise((r) => setTimeout(r, 50));
    const stats = { ...sim.stats.ab };
    sim.close();
    return { out: Buffer.concat(parts), stats };
  };
  const flips = { bitErrorRate: 1e-4 };
  const one = await run(7, 1000, flips);
  const two = await run(7, 4096, flips);
  const other = await run(8, 1000, flips);
  t.same(two.out, one.out, 'seed 7 in 1000- and 4096-byte chunks: the same bytes out');
  t.notSame(other.out, one.out, 'seed 8: other corruption');
  let differing = 0;
  for (let i = 0; i < data.length; i++) for (let x = data[i] ^ one.out[i]; x; x &= x - 1) differing++;
  t.equal(differing, one.stats.flipped, `every counted flip is a changed bit (${differing})`);
  // 1.6 Mbit at 1e-4: 160 flips expected (Poisson, sd 12.6)
  t.ok(one.stats.flipped > 100 && one.stats.flipped < 230, `${one.stats.flipped} bits flipped of 1.6 Mbit at 1e-4`);

  const drops = await run(3, 1500, { dropRate: 1e-3 });
  const drops2 = await run(3, 777, { dropRate: 1e-3 });
  t.same(drops2.out, drops.out, 'drops: same seed, same bytes out');
  t.equal(drops.out.length, data.length - drops.stats.dropped, 'what is dropped is missing');
  t.ok(drops.stats.dropped > 130 && drops.stats.dropped < 270, `${drops.stats.dropped} bytes dropped of 200 000 at 1e-3`);
});

t.test('each direction has its own noise; Noise works on its own', async (t) => {
  const data = randomBytes(50_000);
  const ab = new Noise({ seed: 1, bitErrorRate: 1e-3 }, 1).apply(data);
  const ba = new Noise({ seed: 1, bitErrorRate: 1e-3 }, 2).apply(data);
  t.notSame(ab, ba, 'the two directions differ');
  const whole = new Noise({ seed: 5, bitErrorRate: 1e-3, dropRate: 1e-3 }).apply(data);
  const split = new Noise({ seed: 5, bitErrorRate: 1e-3, dropRate: 1e-3 });
  const pieces = Buffer.concat([split.apply(data.subarray(0, 1)), split.apply(data.subarray(1, 33_333)), split.apply(data.subarray(33_333))]);
  t.same(pieces, whole, 'chunking does not move the errors');
  t.same(new Noise({ seed: 5 }).apply(data), data, 'no rates: no noise');
});

t.test('the cable can be pulled out and plugged back in', async (t) => {
  const { a, b, sim } = memoryLine({ baud: 115200 });
  t.teardown(() => sim.close());
  const received: Buffer[] = [];
  b.on('data', (d: Buffer) => received.push(d));
  a.write('before ');
  await new Promise((r) => setTimeout(r, 100));
  sim.unplug();
  a.write('while unplugged ');
  await new Promise((r) => setTimeout(r, 100));
  sim.plug();
  a.write('after');
  await new Promise((r) => setTimeout(r, 100));
  t.equal(Buffer.concat(received).toString(), 'before after');
  t.equal(sim.stats.ab.lost, 'while unplugged '.length, 'what was sent meanwhile is counted as lost');
});
