/**
 * Every protocol error has a stable numeric code (on the wire, in ERROR and
 * REJECT messages) and a stable name (in logs and on TetherError.code).
 */
export const ErrorCodes = {
  BAD_FRAME: 1,
  CRC_MISMATCH: 2,
  FRAME_TOO_LARGE: 3,
  BAD_MESSAGE: 4,
  UNKNOWN_MESSAGE: 5,
  UNSUPPORTED_VERSION: 6,
  AUTH_FAILED: 7,
  NOT_AUTHENTICATED: 8,
  HANDSHAKE_TIMEOUT: 9,
  PEER_TIMEOUT: 10,
  FLOW_CONTROL: 11,
  UNKNOWN_STREAM: 12,
  UNKNOWN_COMMAND: 13,
  SESSION_EXPIRED: 14,
  SHUTDOWN: 15,
  DUPLICATE_WORKER: 16,
  INTERNAL: 17,
} as const;

export type ErrorName = keyof typeof ErrorCodes;

const NAMES = new Map<number, ErrorName>(
  Object.entries(ErrorCodes).map(([name, code]) => [code, name as ErrorName]),
);

export function errorName(code: number): ErrorName | undefined {
  return NAMES.get(code);
}

export class TetherError extends Error {
  /** Stable name, e.g. 'AUTH_FAILED'. */
  readonly code: ErrorName;

  /** True when the peer reported this error (in an ERROR message), so it is not echoed back. */
  readonly fromPeer: boolean;

  constructor(code: ErrorName, message: string, fromPeer = false) {
    super(message);
    this.name = 'TetherError';
    this.code = code;
    this.fromPeer = fromPeer;
  }

  get wireCode(): number {
    return ErrorCodes[this.code];
  }
}

/** An error as a log line shows it: its stable name first, when it has one ('AUTH_FAILED: 4 frames failed ...'). */
export function describeError(error: Error): string {
  return error instanceof TetherError ? `${error.code}: ${error.message}` : error.message;
}
