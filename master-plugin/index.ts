/**
 * Tether's master side as a library (package.json "main"): accept agents,
 * run commands on them, move files. Everything goes through TetherHub and
 * RemoteAgent, the same path the Buildbot bridge and `tether-master exec` use.
 */
export { TetherHub, type HubOptions, type RejectedWorker } from './hub';
export type { CommandResult, CommandSink, FileTimes, RemoteAgent, RemoteCommand, WorkerInfo } from './remote';
export { awaitAgent, type AwaitAgentOptions } from './await-agent';
export {
  runShell,
  shellArgs,
  exitStatus,
  describeResult,
  BAD_RESULT,
  type OutputChunk,
  type RemoteShell,
  type ShellOptions,
  type ShellResult,
} from './run-shell';
export {
  putFile,
  getFile,
  statFile,
  listDir,
  RemoteCommandError,
  type PutOptions,
  type RemoteStat,
  type TransferOptions,
  type TransferResult,
} from './files';
export { listenAll, agentFacingUrl, type Listening } from './listeners';
export { TetherError, type ErrorName } from '../wire/errors';
export { UsageError, type Endpoint } from '../wire/transport';
