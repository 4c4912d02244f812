/**
 * An agent (pure JavaScript serial line) and a hub (serialport) on the two
 * ends of socat pty pairs: sessions, the worker a line is bound to, a device
 * that goes away and comes back, a cable that is pulled out.
 */
import t from 'tap';
import type { EventEmitter } from 'node:events';
import { Agent } from '../agent/agent';
import type { Command } from '../agent/commands/command';
import type { AgentConnection } from '../master-plugin/agent-connection';
import { type RejectedWorker, TetherHub } from '../master-plugin/hub';
import type { RemoteAgent } from '../master-plugin/remote';
import type { TetherError } from '../wire/errors';
import type { Link } from '../wire/link';
import { openEndpoint, parseEndpoint } from '../wire/transport';
import { type SocatPair, simulatedLine, socatPair } from './helpers/line-sim';
import { sleep, waitFor, withTimeout } from './helpers/support';

const commands: Record<string, Command> = {
  async echo(args, io) {
    await io.stdout(Buffer.from(String(args.text)));
    io.update('rc', 0);
  },
  /** Streams a line every 50 ms until interrupted or the link is lost. */
  async chatter(_args, io) {
    while (!io.signal.aborted) {
      await io.stdout(Buffer.from('tick\n'));
      await new Promise<void>((resolve) => {
        const wake = () => {
          clearTimeout(timer);
          resolve();
        };
        const timer = setTimeout(() => {
          io.signal.removeEventListener('abort', wake);
          resolve();
        }, 50);
        io.signal.addEventListener('abort', wake, { once: true });
      });
    }
  },
};

interface Rig {
  hub: TetherHub;
  agent: Agent;
  logs: string[];
  disconnects: Array<Error | null>;
  stop(): Promise<void>;
}

/** A hub listening on `masterDevice` for worker `name`, and an agent on `agentDevice`. */
async function rig(opts: {
  masterDevice: string;
  agentDevice: string;
  workers?: Record<string, string>;
  lineWorker?: string;
  agentName?: string;
  agentSecret?: string;
  keepalive?: number;
}): Promise<Rig> {
  const logs: string[] = [];
  const debug = process.env.TETHER_SERIAL_DEBUG ? (l: string) => process.stderr.write(`${new Date().toISOString()} ${l}\n`) : () => undefined;
  logs.push = (...lines: string[]) => {
    for (const l of lines) debug(l);
    return Array.prototype.push.apply(logs, lines);
  };
  const hub = new TetherHub({
    workers: opts.workers ?? { w1: 'sesame' },
    keepalive: opts.keepalive ?? 10,
    log: (l) => logs.push(`hub: ${l}`),
  });
  await hub.listen(`serial:${opts.masterDevice}?baud=115200&worker=${opts.lineWorker ?? 'w1'}`);
  const name = opts.agentName ?? 'w1';
  const endpoint = parseEndpoint(`serial:${opts.agentDevice}?baud=115200`);
  const agent = new Agent({
    name,
    secret: opts.agentSecret ?? (opts.workers ?? { w1: 'sesame' })[name] ?? 'sesame',
    basedir: '/tmp',
    commands,
    masterLabel: `serial:${opts.agentDevice}`,
    open: () => openEndpoint(endpoint),
    maxBackoffMs: 300,
    log: (l) => logs.push(`agent: ${l}`),
  });
  const disconnects: Array<Error | null> = [];
  agent.on('disconnected', (e: Error | null) => disconnects.push(e));
  const running = agent.run();
  return {
    hub,
    agent,
    logs,
    disconnects,
    async stop() {
      agent.stop();
      await running;
      await hub.close();
    },
  };
}

async function runEcho(remote: RemoteAgent, text: string): Promise<string> {
  let out = '';
  const result = await remote.run('echo', { text }, { stdout: (c) => void (out += c) }).result;
  if (result.failure) throw new Error(`echo failed: ${result.failure.message}`);
  return out;
}

/** Handles and timers of this process, by kind (tap's own included). */
function resources(): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const r of process.getActiveResourcesInfo()) counts[r] = (counts[r] ?? 0) + 1;
  return counts;
}

t.test('an agent and a hub run commands over a pty pair', async (t) => {
  const pair = await socatPair();
  t.teardown(() => pair.close());
  const r = await rig({ masterDevice: pair.b, agentDevice: pair.a });
  t.teardown(() => r.stop());
  const remote = await r.hub.waitForAgent('w1', 15_000);
  t.equal(await runEcho(remote, 'hello over the line'), 'hello over the line');
  t.equal(remote.info.hostname, require('node:os').hostname(), 'worker info arrived');
  const masterLink = [...((r.hub as unknown as { links: Set<Link> }).links)][0];
  t.equal(masterLink.lossy, true, 'the master side knows the line is lossy');
  t.equal(masterLink.bytesPerSecond, 11520, 'and its rate');
  const agentLink = (r.agent as unknown as { session: { link: Link } }).session.link;
  t.equal(agentLink.lossy, true, 'so does the agent');
  t.equal(agentLink.bytesPerSecond, 11520);
  t.match(r.logs.join('\n'), /hub: listening on serial:.*\?baud=115200&worker=w1/);
  t.match(r.logs.join('\n'), /hub: worker 'w1' connected from serial:/);
});

t.test('a serial line refuses every worker but its own; authentication still runs', async (t) => {
  const pair = await socatPair();
  t.teardown(() => pair.close());
  const workers = { w1: 'sesame', w2: 'open-up' };
  const r = await rig({ masterDevice: pair.b, agentDevice: pair.a, workers, agentName: 'w2' });
  t.teardown(() => r.stop());
  const [peer, error, who] = await new Promise<[string, TetherError, RejectedWorker]>((resolve) =>
    r.hub.once('rejected', (p: string, e: TetherError, w: RejectedWorker) => resolve([p, e, w])),
  );
  t.match(peer, /^serial:/);
  t.equal(error.code, 'AUTH_FAILED');
  t.same(who, { worker: 'w2', known: false }, 'w2 is configured, but not for this line');
  t.equal(r.hub.connected().length, 0);
  await sleep(500);
  t.match(r.logs.join('\n'), /agent: .*(AUTH_FAILED|failed authentication|unknown worker)/);
  t.match(r.logs.join('\n'), /hub: rejected connection from serial:.*is for worker 'w1'/);
  await r.stop();

  // The line stays open after a refusal: its own worker gets in, with its secret only.
  // (Stop an agent only once it is connected or refused: Agent.stop() during a handshake does not end it.)
  const wrong = await rig({ masterDevice: pair.b, agentDevice: pair.a, workers, agentSecret: 'guess' });
  const [, wrongError, wrongWho] = await new Promise<[string, TetherError, RejectedWorker]>((resolve) =>
    wrong.hub.once('rejected', (p: string, e: TetherError, w: RejectedWorker) => resolve([p, e, w])),
  );
  t.equal(wrongError.code, 'AUTH_FAILED', 'the right name with a wrong secret is refused');
  t.same(wrongWho, { worker: 'w1', known: true });
  await wrong.stop();
  const right = await rig({ masterDevice: pair.b, agentDevice: pair.a, workers });
  t.teardown(() => right.stop());
  const remote = await right.hub.waitForAgent('w1', 15_000);
  t.equal(await runEcho(remote, 'mine'), 'mine');
});

/** The master's session object behind a RemoteAgent (it detaches and resumes with the link). */
function masterSession(remote: RemoteAgent): EventEmitter & { isAttached: boolean; isClosed: boolean } {
  return (remote as AgentConnection).session as unknown as EventEmitter & { isAttached: boolean; isClosed: boolean };
}

t.test('socat killed mid-session: both sides notice, nothing hangs or leaks, and they reconnect', async (t) => {
  const baseline = resources();
  const pair: SocatPair = await socatPair();
  const r = await rig({ masterDevice: pair.b, agentDevice: pair.a, keepalive: 1 });
  const first = await r.hub.waitForAgent('w1', 15_000);
  let ticks = 0;
  const chatter = first.run('chatter', {}, { stdout: () => void ticks++ });
  await waitFor('the command to print', () => ticks >= 3, { timeoutMs: 15_000, intervalMs: 20 });

  const killedAt = Date.now();
  const masterDetached = new Promise((resolve) => masterSession(first).once('detached', resolve));
  await pair.stop();
  await masterDetached;
  const masterNoticed = Date.now() - killedAt;
  while (r.disconnects.length === 0 && Date.now() - killedAt < 10_000) await sleep(20);
  const agentNoticed = Date.now() - killedAt;
  t.ok(masterNoticed < 3000, `the master noticed within 3 keepalive intervals (${masterNoticed} ms)`);
  t.ok(r.disconnects.length === 1 && agentNoticed < 3000, `the agent noticed within 3 keepalive intervals (${agentNoticed} ms)`);

  await sleep(1000); // both sides retry while the device is gone
  const ticksBefore = ticks;
  const resumed = new Promise((resolve) => r.hub.once('agentResumed', resolve));
  await pair.start();
  t.equal(await withTimeout(resumed, 20_000, 'the session to resume'), first, 'the session resumed on the reopened line');
  t.equal(await runEcho(first, 'back again'), 'back again', 'commands run again');
  await waitFor('the command to print again', () => ticks > ticksBefore, { timeoutMs: 15_000, intervalMs: 20 });
  t.pass('the command that ran across the outage carries on');
  chatter.interrupt('test: done');
  await chatter.result;
  t.match(r.logs.join('\n'), /hub: serial line .* went away .*reopening it when it is back/);
  t.match(r.logs.join('\n'), /hub: serial line .* is back/);

  await r.stop();
  await pair.close();
  await sleep(500);
  const after = resources();
  for (const kind of ['TTYWrap', 'Timeout', 'FSReqCallback', 'ProcessWrap', 'PipeWrap']) {
    t.ok((after[kind] ?? 0) <= (baseline[kind] ?? 0), `no ${kind} left behind (${after[kind] ?? 0}, was ${baseline[kind] ?? 0})`);
  }
});

t.test('a pulled cable is found by keepalive on both sides; plugged back, they reconnect', async (t) => {
  const line = await simulatedLine({ baud: 115200 });
  t.teardown(() => line.close());
  const r = await rig({ masterDevice: line.masterPath, agentDevice: line.agentPath, keepalive: 1 });
  t.teardown(() => r.stop());
  const first = await r.hub.waitForAgent('w1', 20_000);
  t.equal(await runEcho(first, 'at 115200 baud'), 'at 115200 baud');

  const cutAt = Date.now();
  const masterDetached = new Promise((resolve) => masterSession(first).once('detached', resolve));
  line.sim.unplug();
  await masterDetached;
  const masterNoticed = Date.now() - cutAt;
  while (r.disconnects.length === 0 && Date.now() - cutAt < 10_000) await sleep(20);
  const agentNoticed = Date.now() - cutAt;
  t.ok(masterNoticed >= 2000 && masterNoticed < 5000, `the master noticed after ${masterNoticed} ms (keepalive 1 s)`);
  t.ok(r.disconnects.length === 1 && agentNoticed >= 2000 && agentNoticed < 5000, `the agent noticed after ${agentNoticed} ms`);
  t.match(String(r.disconnects[0]), /no frame from the peer/);

  const resumed = new Promise((resolve) => r.hub.once('agentResumed', resolve));
  line.sim.plug();
  t.equal(await withTimeout(resumed, 30_000, 'the session to resume'), first, 'the session resumed');
  t.equal(await runEcho(first, 'plugged back in'), 'plugged back in');
});
