/**
 * The agent's process keeps V8's young generation at its first size
 * (agent/young-generation.ts), set as its entry point loads, before the rest
 * of the agent has grown the heap; a program that embeds the Agent class
 * keeps V8's default. Checked in fresh Node processes by the young
 * generation's size (V8's heap statistics), not by RSS: the same allocations
 * grow it without the setting and leave it alone with it.
 */
import t from 'tap';
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';
import { REPO_ROOT } from './helpers/support';

const MiB = 1 << 20;

/** The young generation's size in a fresh Node that loads `module`: right after, and after 4 million small allocations of which the last 20 000 stay alive. */
function youngGeneration(module: string): { loaded: number; churned: number } {
  const script = `
    const v8 = require('node:v8');
    const size = () => v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_size;
    require(${JSON.stringify(path.join(REPO_ROOT, 'build', module))});
    const loaded = size();
    const live = [];
    for (let i = 0; i < 4e6; i++) {
      live.push({ i, text: 'line ' + i });
      if (live.length > 20000) live.length = 0;
    }
    process.stdout.write(JSON.stringify({ loaded, churned: size() }));
  `;
  // env(1) drops NODE_OPTIONS just before node starts: tap's child_process hook would put its loader back, and the loader grows the heap first.
  return JSON.parse(execFileSync('/usr/bin/env', ['-u', 'NODE_OPTIONS', process.execPath, '-e', script], { encoding: 'utf8' })) as {
    loaded: number;
    churned: number;
  };
}

t.test("the agent's entry point keeps the young generation at its first size", async (t) => {
  const { loaded, churned } = youngGeneration('agent/cli.js');
  t.ok(loaded <= 2 * MiB, `after loading: ${loaded / MiB} MiB`);
  t.ok(churned <= 2 * MiB, `after the allocations: ${churned / MiB} MiB`);
});

t.test('the Agent class alone leaves the heap policy to its program', async (t) => {
  const { churned } = youngGeneration('agent/agent.js');
  t.ok(churned >= 8 * MiB, `the same allocations grow it: ${churned / MiB} MiB`);
});
