/**
 * The hub of the hostile-peer benchmark, in a process of its own so that
 * its memory is its own (bench/hostile.ts forks it over IPC). It accepts the
 * worker 'bad' and, when asked, runs a command on it whose output nobody
 * takes (the sink never returns): what a blocked consumer is.
 *
 *   parent → {type: 'start', secret, keepalive, blockedCommand}
 *   hub    → {type: 'listening', port}
 *   hub    → {type: 'closed', reason}      the attacker's session ended
 */
import { TetherHub } from '../master-plugin/hub';
import type { AgentConnection } from '../master-plugin/agent-connection';

export type HostileRequest = { type: 'start'; secret: string; keepalive: number; blockedCommand: boolean };
export type HostileReport =
  | { type: 'listening'; port: number }
  /** heapMB: V8's heap and Buffers in use after a full GC (what the hub still holds). */
  | { type: 'closed'; reason: string; heapMB: number };

const send = (m: HostileReport) => process.send?.(m);

process.on('message', (m: HostileRequest) => {
  if (m.type !== 'start') return;
  const hub = new TetherHub({ workers: { bad: m.secret }, keepalive: m.keepalive, resume: false });
  hub.on('agent', (agent: AgentConnection) => {
    agent.session.once('close', (error: Error | null) => {
      setTimeout(() => {
        (globalThis as { gc?: () => void }).gc?.();
        const { heapUsed, external } = process.memoryUsage();
        send({ type: 'closed', reason: error?.message ?? 'closed', heapMB: Math.round((heapUsed + external) / 1e5) / 10 });
      }, 200);
    });
    if (m.blockedCommand) {
      const never = () => new Promise<void>(() => undefined);
      agent.run('shell', { command: ['cat'] }, { stdout: never, stderr: never, header: never }).result.catch(() => undefined);
    }
  });
  void hub.listen('tcp://127.0.0.1:0').then((address) => send({ type: 'listening', port: address.port }));
});
