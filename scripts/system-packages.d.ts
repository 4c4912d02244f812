/** Types for scripts/system-packages.js. */
/** A Debian package and a file it installs: an absolute path, or a program on PATH. */
export type Need = { pkg: string; file: string; tool?: undefined } | { pkg: string; tool: string; file?: undefined };
/** The packages of the unmet needs, each once, in order. */
export function missingPackages(needs: Need[], present?: (need: Need) => boolean): string[];
/** The one apt-get command that installs `pkgs`. */
export function installCommand(pkgs: string[]): string;
/** As root installs what is missing; otherwise throws naming the one apt-get command for all of it. */
export function ensurePackages(
  needs: Need[],
  whoNeeds: string,
  options?: { log?: (line: string) => void; present?: (need: Need) => boolean; root?: boolean; install?: (pkgs: string[]) => void },
): void;
