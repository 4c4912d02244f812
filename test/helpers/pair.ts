/** An agent and a hub connected over real loopback TCP, for tests. */
import { Agent } from '../../agent/agent';
import type { Command } from '../../agent/commands/command';
import { TetherHub, type HubOptions } from '../../master-plugin/hub';
import type { RemoteAgent } from '../../master-plugin/remote';
import { connect } from '../../wire/transport';

export interface Pair {
  hub: TetherHub;
  agent: Agent;
  remote: RemoteAgent;
  port: number;
  close(): Promise<void>;
}

export async function startPair(
  commands: Record<string, Command>,
  opts: { basedir?: string; hub?: Partial<HubOptions>; secret?: string; agentSecret?: string } = {},
): Promise<Pair> {
  const secret = opts.secret ?? 'sesame';
  const hub = new TetherHub({ workers: { w1: secret }, ...opts.hub });
  const address = await hub.listen('tcp://127.0.0.1:0');
  const agent = new Agent({
    name: 'w1',
    secret: opts.agentSecret ?? secret,
    basedir: opts.basedir ?? '/tmp',
    commands,
    masterLabel: 'test master',
    open: () => connect(address),
    maxBackoffMs: 200,
  });
  const running = agent.run();
  const remote = await hub.waitForAgent('w1', 5000);
  return {
    hub,
    agent,
    remote,
    port: address.port,
    async close() {
      agent.stop();
      await running;
      await hub.close();
    },
  };
}
