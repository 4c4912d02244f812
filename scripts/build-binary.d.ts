/** Types for scripts/build-binary.js (used by test/binary-*.test.ts). */
export interface Target {
  name: string;
  /** Node's process.arch of the board. */
  arch: string;
  node: { pkg: string; version: string; integrity: string };
  strip: { tool: string; apt: string };
  qemu: { tool: string; sysroot: string; apt: string };
}
export const TARGETS: Target[];
export const DIST: string;
export const SEA_CONFIG: Record<string, unknown>;
export function binaryPath(target: Target): string;
/** [command, ...args] that runs `executable` (built for `target`) here: directly, or under qemu-user. */
export function runner(target: Target, executable: string): string[];
export function bundle(): Promise<string>;
export function findTarget(name: string): Target;
/** Builds what is missing or out of date; resolves with { 'linux-x64': path, ... }. */
export function ensureBinaries(opts?: { force?: boolean; targets?: string[]; log?: (line: string) => void }): Promise<Record<string, string>>;
/** The esbuild plugin that keeps cbor-extract out of the bundle. */
export const noNativeCbor: { name: string; setup(build: unknown): void };
