/**
 * A child process for the front-door tests: idle connections to a master on
 * 127.0.0.1:PORT that never send a byte (so never start TLS), PER_ADDRESS
 * of them from each local address given (127.0.0.x: all loopback). Run with
 * the TypeScript loader:
 *
 *   node --import=@tapjs/typescript/import test/helpers/flood.ts PORT MODE PER_ADDRESS ADDRESS...
 *
 * MODE 'hold' opens them once and keeps those the master leaves open;
 * 'flood' opens a new one whenever one closes, so new connections keep
 * coming as fast as the master drops them. It runs in its own process so
 * that the agent under test, in the test's process, is not slowed by it.
 * Prints one JSON line per 100 ms: {opened, open}.
 */
import * as net from 'node:net';

function main(): void {
  const [portArg, mode, perAddressArg, ...addresses] = process.argv.slice(2);
  const port = Number(portArg);
  const perAddress = Number(perAddressArg);
  let opened = 0;
  let open = 0;
  const openOne = (from: string): void => {
    opened++;
    open++;
    const socket = net.connect({ host: '127.0.0.1', port, localAddress: from });
    socket.on('error', () => undefined);
    socket.once('close', () => {
      open--;
      if (mode === 'flood') setImmediate(() => openOne(from));
    });
  };
  for (const from of addresses) for (let i = 0; i < perAddress; i++) openOne(from);
  setInterval(() => process.stdout.write(`${JSON.stringify({ opened, open })}\n`), 100);
}

main();
