/**
 * `npm start`: the demo runs without Buildbot or configuration, streams a
 * step's output as it comes, prints its summary table, exits 0 and leaves no
 * process or temporary directory behind.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { alive } from './helpers/processes';
import { REPO_ROOT } from './helpers/support';

t.test('npm start runs the demo build and cleans up', async (t) => {
  t.equal(require('../package.json').scripts.start, 'node build/master-plugin/demo.js', 'npm start is the demo');
  const started = Date.now();
  const lines: Array<{ at: number; text: string }> = [];
  let partial = '';
  let stderr = '';
  const npm = spawn('npm', ['start'], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  npm.stdout.on('data', (d: Buffer) => {
    const parts = (partial + d.toString()).split('\n');
    partial = parts.pop() ?? '';
    for (const text of parts) lines.push({ at: Date.now() - started, text });
  });
  npm.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const killer = setTimeout(() => process.kill(-(npm.pid as number), 'SIGKILL'), 120_000);
  const code = await new Promise<number | null>((resolve) => npm.once('close', (c) => resolve(c)));
  clearTimeout(killer);
  const out = lines.map((l) => l.text).join('\n');
  t.equal(code, 0, 'exit 0');
  if (code !== 0) t.comment(`${out}\n${stderr}`);

  // the summary table
  const row = (cells: string) => new RegExp(`^\\s+${cells}$`, 'm');
  t.match(out, /^\s+step\s+agent\s+result\s+duration\s+bytes$/m, 'the table header');
  t.match(out, row('compile\\s+local\\s+success\\s+\\d+\\.\\d\\d s\\s+\\d+'));
  t.match(out, row('upload\\s+local\\s+success\\s+\\d+\\.\\d\\d s\\s+196608'));
  t.match(out, row('download\\s+local\\s+success\\s+\\d+\\.\\d\\d s\\s+\\d+'));
  t.match(out, row('listdir\\s+local\\s+success \\(2 entries\\)\\s+\\d+\\.\\d\\d s\\s+-'));
  t.match(out, row('test\\s+local\\s+failure \\(exit code 3\\)\\s+\\d+\\.\\d\\d s\\s+\\d+'));
  // socat is installed for the tests (test/preflight.js): the second agent runs over a pty pair
  for (const step of ['compile', 'upload', 'download', 'listdir']) t.match(out, row(`${step}\\s+serial\\s+success.*`), `${step} on the serial agent`);
  t.match(out, row('test\\s+serial\\s+failure \\(exit code 3\\)\\s+\\d+\\.\\d\\d s\\s+\\d+'));
  t.match(out, /^all 10 steps ended as expected/m);
  t.match(out, /^serial line: socat pty pair, pid \d+:/m, 'one line about the serial line');
  t.match(out, /^cleanup: stopped agent 'serial' \(pid \d+\)$/m);
  t.match(out, /^  \[listdir@local\] build: config\.txt out$/m, 'the listing');
  t.match(out, /^  \[test@local\] \(stderr\) test_uart \.\.\. FAILED/m, 'the failing step shows its stderr');

  // output streamed as it came, not at the end of the step
  const first = lines.find((l) => l.text === '  [compile@local] compiling boot.c');
  const last = lines.find((l) => /^ {2}\[compile@local\] linked out\/firmware\.bin \(196608 bytes\)$/.test(l.text));
  t.ok(first && last, 'the compile step output, prefixed');
  if (first && last) t.ok(last.at - first.at >= 400, `lines arrived as they were printed (${last.at - first.at} ms apart)`);

  // nothing left behind
  const pids = [...new Set([...out.matchAll(/pid (\d+)/g)].map((m) => Number(m[1])))];
  t.ok(pids.length >= 1, `the demo reports the pids it started (${pids.join(', ')})`);
  for (const pid of pids) t.notOk(alive(pid), `pid ${pid} is gone`);
  t.match(out, /^cleanup: stopped agent 'local' \(pid \d+\)$/m);
  const tmp = /^temporary directory: (.+)$/m.exec(out)?.[1];
  t.ok(tmp, 'the demo names its temporary directory');
  if (tmp) t.notOk(fs.existsSync(tmp), `${tmp} was removed`);
  t.match(out, new RegExp(`^cleanup: removed ${tmp}$`, 'm'));
});
