/**
 * A TCP relay on loopback that cuts the connections through it on command:
 * a reset (RST on both sides), or a silent drop (bytes swallowed, no close:
 * only keepalive finds it). While `refusing`, new connections are reset at once.
 */
import * as net from 'node:net';
import { listenLoopback } from './support';

export class FaultProxy {
  private server!: net.Server;
  private pairs: Array<{ client: net.Socket; upstream: net.Socket; silent: boolean }> = [];
  refusing = false;
  connections = 0;
  /** Bytes relayed, both directions, over every connection. */
  relayed = 0;
  private triggers: Array<{ at: number; cut: () => void }> = [];
  port = 0;

  constructor(private readonly targetPort: number) {}

  async start(): Promise<void> {
    this.server = net.createServer((client) => this.relay(client));
    this.port = await listenLoopback(this.server);
  }

  private relay(client: net.Socket): void {
    client.on('error', () => undefined);
    if (this.refusing) {
      client.resetAndDestroy();
      return;
    }
    this.connections++;
    const upstream = net.connect(this.targetPort, '127.0.0.1');
    upstream.on('error', () => undefined);
    const pair = { client, upstream, silent: false };
    this.pairs.push(pair);
    const forward = (to: net.Socket) => (d: Buffer) => {
      if (pair.silent) return;
      to.write(d);
      this.relayed += d.length;
      while (this.triggers.length > 0 && this.relayed >= this.triggers[0].at) this.triggers.shift()!.cut();
    };
    client.on('data', forward(upstream));
    upstream.on('data', forward(client));
    const end = () => {
      client.destroy();
      upstream.destroy();
      this.pairs = this.pairs.filter((p) => p !== pair);
    };
    client.on('close', end);
    upstream.on('close', end);
  }

  /** Resets every connection through the proxy (both ends see ECONNRESET). */
  reset(): void {
    for (const { client, upstream } of this.pairs) {
      client.resetAndDestroy();
      upstream.resetAndDestroy();
    }
    this.pairs = [];
  }

  /** Swallows everything on the current connections from now on, closing nothing. */
  silence(): void {
    for (const pair of this.pairs) pair.silent = true;
  }

  /** Cuts (reset or silence, alternating) when the relayed byte count passes each threshold. */
  cutAtBytes(thresholds: number[]): void {
    this.triggers = thresholds
      .sort((a, b) => a - b)
      .map((at, i) => ({ at, cut: () => (i % 2 === 0 ? this.reset() : this.silence()) }));
  }

  async close(): Promise<void> {
    this.reset();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
