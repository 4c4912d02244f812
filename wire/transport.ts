/**
 * Transports turn an address into a byte stream. Every transport carries the
 * same frames; only how the stream is opened differs.
 */
import { readFileSync } from 'node:fs';
import * as net from 'node:net';
import * as tls from 'node:tls';
import type { Duplex } from 'node:stream';

export type Endpoint =
  | { kind: 'tcp'; host: string; port: number }
  | { kind: 'tls'; host: string; port: number };

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** Parses tcp://HOST:PORT or tls://HOST:PORT (IPv6 hosts in brackets). */
export function parseEndpoint(url: string): Endpoint {
  const match = /^(tcp|tls):\/\/(\[[^\]]+\]|[^:/]*):(\d+)\/?$/.exec(url);
  if (!match) throw new UsageError(`'${url}' is not an address like tcp://HOST:PORT or tls://HOST:PORT`);
  const port = Number(match[3]);
  if (port > 65535) throw new UsageError(`port ${port} in '${url}' is out of range`);
  const host = match[2].replace(/^\[(.*)\]$/, '$1') || '0.0.0.0';
  return { kind: match[1] as 'tcp' | 'tls', host, port };
}

export function describeEndpoint(e: Endpoint): string {
  return `${e.kind}://${e.host.includes(':') ? `[${e.host}]` : e.host}:${e.port}`;
}

export interface ConnectOptions {
  /** tls: a CA bundle or the pinned certificate of the master. */
  ca?: string;
}

/** Opens a stream to the endpoint; resolves once it is connected. */
export function connect(endpoint: Endpoint, options: ConnectOptions = {}): Promise<Duplex> {
  return new Promise((resolve, reject) => {
    const socket =
      endpoint.kind === 'tcp'
        ? net.connect({ host: endpoint.host, port: endpoint.port })
        : tls.connect({
            host: endpoint.host,
            port: endpoint.port,
            servername: net.isIP(endpoint.host) ? undefined : endpoint.host,
            ca: options.ca ? readFileSync(options.ca) : undefined,
          });
    const ready = endpoint.kind === 'tcp' ? 'connect' : 'secureConnect';
    socket.once(ready, () => {
      socket.off('error', reject);
      if (socket instanceof net.Socket) socket.setNoDelay(true);
      socket.setKeepAlive(true, 30_000);
      resolve(socket);
    });
    socket.once('error', reject);
  });
}

export interface ListenOptions {
  /** tls: PEM certificate and key files. */
  cert?: string;
  key?: string;
}

export interface Listener {
  readonly address: Endpoint;
  close(): Promise<void>;
}

/** Listens on the endpoint; calls onStream for every accepted connection. */
export function listen(endpoint: Endpoint, options: ListenOptions, onStream: (stream: Duplex, peer: string) => void): Promise<Listener> {
  let server: net.Server;
  if (endpoint.kind === 'tls') {
    if (!options.cert || !options.key) throw new UsageError(`${describeEndpoint(endpoint)} needs --cert and --key`);
    server = tls.createServer({ cert: readFileSync(options.cert), key: readFileSync(options.key) }, (socket) => {
      onStream(socket, `${socket.remoteAddress}:${socket.remotePort}`);
    });
  } else {
    server = net.createServer((socket) => {
      socket.setNoDelay(true);
      onStream(socket, `${socket.remoteAddress}:${socket.remotePort}`);
    });
  }
  const sockets = new Set<net.Socket>();
  server.on(endpoint.kind === 'tls' ? 'secureConnection' : 'connection', (socket: net.Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  return new Promise((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) => {
      reject(
        error.code === 'EADDRINUSE'
          ? new UsageError(`${describeEndpoint(endpoint)} is already in use: stop what listens there or choose another port`)
          : error,
      );
    });
    server.listen(endpoint.port, endpoint.host, () => {
      const bound = server.address() as net.AddressInfo;
      resolve({
        address: { ...endpoint, port: bound.port },
        close: () =>
          new Promise<void>((done) => {
            for (const socket of sockets) socket.destroy();
            server.close(() => done());
          }),
      });
    });
  });
}
