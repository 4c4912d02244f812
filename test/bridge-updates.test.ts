/**
 * buildbot-updates.ts against buildbot-worker's own buffer_manager.py: the
 * same sequences of appends, timer runs and flushes go through both (Python
 * with Twisted's task.Clock as its reactor), and the messages must be the same.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { BufferManager, type Update, joinLineInfo, updateSize } from '../master-plugin/buildbot-updates';
import type { LineInfo } from '../master-plugin/buildbot-lines';

const PYTHON = process.env.TETHER_BUILDBOT_PYTHON ?? '/usr/bin/python3';

type Event = ['append', string, unknown] | ['advance', number] | ['flush'];
interface Case {
  name: string;
  size: number;
  /** buffer_timeout, seconds. */
  timeout: number;
  events: Event[];
}

const REFERENCE = String.raw`
import json, sys
from twisted.internet.task import Clock
from buildbot_worker.util.buffer_manager import BufferManager

def tupled(key, data):
    if key in ('stdout', 'stderr', 'header'):
        return tuple(data)
    if key == 'log':
        return (data[0], tuple(data[1]))
    return data

out = []
for case in json.load(sys.stdin):
    clock = Clock()
    sent = []
    bm = BufferManager(clock, lambda m: sent.append(json.loads(json.dumps(m))), case['size'], case['timeout'])
    for ev in case['events']:
        if ev[0] == 'append':
            bm.append(ev[1], tupled(ev[1], ev[2]))
        elif ev[0] == 'advance':
            clock.advance(ev[1])
        else:
            bm.flush()
    out.append(sent)
json.dump(out, sys.stdout)
`;

function reference(cases: Case[]): Update[][][] {
  const r = spawnSync(PYTHON, ['-c', REFERENCE], { input: JSON.stringify(cases), encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 });
  if (r.status !== 0) throw new Error(`buffer_manager.py failed: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

/** Timers on a clock the test moves, like Twisted's task.Clock. */
class FakeClock {
  now = 0;
  private pending: Array<{ at: number; fn: () => void }> = [];
  readonly timers = {
    set: (fn: () => void, ms: number) => {
      const entry = { at: this.now + ms, fn };
      this.pending.push(entry);
      return entry;
    },
    clear: (handle: unknown) => {
      this.pending = this.pending.filter((e) => e !== handle);
    },
  };
  advance(ms: number): void {
    this.now += ms;
    for (;;) {
      const due = this.pending.filter((e) => e.at <= this.now).sort((a, b) => a.at - b.at)[0];
      if (!due) return;
      this.pending = this.pending.filter((e) => e !== due);
      due.fn();
    }
  }
}

function port(c: Case): Update[][] {
  const clock = new FakeClock();
  const sent: Update[][] = [];
  // JSON round trip: what was sent, as it was when it was sent (and as Python's JSON has it)
  const bm = new BufferManager((m) => sent.push(JSON.parse(JSON.stringify(m))), c.size, () => c.timeout * 1000, clock.timers);
  for (const ev of structuredClone(c.events)) {
    if (ev[0] === 'append') bm.append(ev[1], ev[2]);
    else if (ev[0] === 'advance') clock.advance(ev[1] * 1000);
    else bm.flush();
  }
  return sent;
}

/** A deterministic generator (a 32-bit LCG), so every run feeds the same sequences. */
function lcg(seed: number): (n: number) => number {
  let s = seed >>> 0;
  return (n) => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s % n;
  };
}

/** `lines` lines of the given lengths (newline included) as LineBoundaryFinder returns them. */
function lineInfo(lengths: number[], time: number, fill = 'x'): LineInfo {
  let text = '';
  const lf: number[] = [];
  for (const n of lengths) {
    text += fill.repeat(n - 1) + '\n';
    lf.push(text.length - 1);
  }
  return [text, lf, lengths.map(() => time)];
}

function randomCase(seed: number, size: number): Case {
  const rnd = lcg(seed);
  const events: Event[] = [];
  const keys = ['stdout', 'stdout', 'stdout', 'stderr', 'header', 'log', 'log', 'rc', 'elapsed'];
  for (let i = 0; i < 300; i++) {
    const key = keys[rnd(keys.length)];
    const time = i / 10;
    if (key === 'rc' || key === 'elapsed') {
      events.push(['append', key, rnd(3)]);
    } else {
      // mostly short lines, sometimes a run bigger than the buffer, sometimes one line bigger than it
      const big = rnd(20) === 0;
      const count = big ? 10 + rnd(size / 8) : 1 + rnd(8);
      const lengths = Array.from({ length: count }, () => (rnd(30) === 0 ? size + rnd(size) : 1 + rnd(big ? 200 : 60)));
      const info = lineInfo(lengths, time, 'é');
      events.push(['append', key, key === 'log' ? [rnd(2) ? 'build.log' : 'test.log', info] : info]);
    }
    const r = rnd(10);
    if (r === 0) events.push(['advance', 1 + rnd(6)]);
    else if (r === 1) events.push(['flush']);
  }
  events.push(['flush']);
  return { name: `random sequence ${seed}, buffer ${size}`, size, timeout: 5, events };
}

t.test('the port sends what buffer_manager.py sends', async (t) => {
  const cases: Case[] = [
    {
      name: 'buildbot-worker reading a fast `yes` pipe: 8192-byte reads of 64-byte lines',
      size: 64 * 1024,
      timeout: 5,
      events: [
        ...Array.from({ length: 100 }, (_, i): Event => ['append', 'stdout', lineInfo(Array(128).fill(64), i)]),
        ['append', 'rc', 0],
        ['append', 'header', lineInfo([30], 100)],
        ['flush'],
      ],
    },
    {
      name: 'the timer sends a quiet buffer, and only once per buffer',
      size: 1024,
      timeout: 5,
      events: [
        ['append', 'stdout', lineInfo([10], 0)],
        ['advance', 4],
        ['append', 'stdout', lineInfo([10], 4)],
        ['advance', 1],
        ['append', 'stderr', lineInfo([10], 5)],
        ['advance', 4.5],
        ['append', 'stderr', lineInfo([10], 9.5)],
        ['advance', 10],
        ['flush'],
      ],
    },
    {
      name: 'lines bigger than the buffer: pieces of whole lines, each its own message',
      size: 1000,
      timeout: 5,
      events: [
        ['append', 'stdout', lineInfo([100], 0)],
        ['append', 'stdout', lineInfo(Array(40).fill(50), 1)],
        ['append', 'log', ['build.log', lineInfo([30, 2000, 20, 20, 1500], 2)]],
        ['append', 'stdout', lineInfo([3000], 3)],
        ['append', 'elapsed', 1.5],
        ['flush'],
      ],
    },
    {
      name: 'log lines join only with the same log name; values never join',
      size: 4096,
      timeout: 5,
      events: [
        ['append', 'log', ['a', lineInfo([5], 0)]],
        ['append', 'log', ['a', lineInfo([6, 7], 1)]],
        ['append', 'log', ['b', lineInfo([8], 2)]],
        ['append', 'log', ['a', lineInfo([9], 3)]],
        ['append', 'rc', 0],
        ['append', 'rc', 1],
        ['append', 'header', lineInfo([4], 4)],
        ['append', 'header', lineInfo([4], 4)],
        ['flush'],
        ['flush'],
      ],
    },
  ];
  for (const seed of [1, 2, 3, 4]) cases.push(randomCase(seed, seed % 2 ? 1024 : 4096));
  const expected = reference(cases);
  for (const [i, c] of cases.entries()) {
    const got = port(c);
    t.ok(expected[i].length > 0, `${c.name}: buffer_manager.py sent something`);
    t.same(got, expected[i], `${c.name}: ${got.length} messages, as buffer_manager.py's ${expected[i].length}`);
  }
  const pipe = expected[0];
  t.equal(pipe[0][0][1] && (pipe[0][0][1] as LineInfo)[1].length, 768, 'six 8192-byte reads per 64 KiB update (the figure the bridge aims at)');
});

t.test('sizes and joins', async (t) => {
  t.equal(updateSize('stdout', ['ab\n', [2], [1]]), 3 + 16);
  t.equal(updateSize('log', ['x', ['ab\ncd\n', [2, 5], [1, 1]]]), 6 + 32);
  t.equal(updateSize('rc', 0), 20);
  t.equal(updateSize('files', Array(1000).fill('name')), 20, 'a value counts 20, however big, as in buffer_manager.py');
  const a: LineInfo = ['aa\n', [2], [1]];
  t.same(joinLineInfo(a, ['bbb\n', [3], [2]]), ['aa\nbbb\n', [2, 6], [1, 2]]);
});
