/** Types for scripts/build-binary.js (used by test/binary-*.test.ts). */
import type { Need } from './system-packages';

export interface Target {
  name: string;
  /** Node's process.arch of the board. */
  arch: string;
  node: { pkg: string; version: string; integrity: string };
  strip: { tool: string; pkg: string };
  /** `libs`: file in `sysroot`/lib -> the package that installs it. */
  qemu: { tool: string; sysroot: string; libs: Record<string, string> };
}
export const TARGETS: Target[];
export const DIST: string;
export const SEA_CONFIG: Record<string, unknown>;
export function binaryPath(target: Target): string;
/** The system packages building `target` on this machine needs (its strip; qemu-user and libraries unless its CPU is this one's). */
export function buildNeeds(target: Target): Need[];
/** [command, ...args] that runs `executable` (built for `target`) here: directly, or under qemu-user. */
export function runner(target: Target, executable: string): string[];
export function bundle(): Promise<string>;
export function findTarget(name: string): Target;
/** Builds what is missing or out of date; resolves with { 'linux-x64': path, ... }. */
export function ensureBinaries(opts?: { force?: boolean; targets?: string[]; log?: (line: string) => void }): Promise<Record<string, string>>;
