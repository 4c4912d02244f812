/** A one-line progress bar for put/get, drawn on a terminal (callers only create one for a TTY). */

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v >= 100 ? v.toFixed(0) : v.toFixed(1)} ${units[i]}`;
}

/** The bar's text for `done` of `total` bytes after `seconds`, `width` columns wide. */
export function renderProgress(label: string, done: number, total: number | null, seconds: number, width = 80): string {
  const rate = seconds > 0 ? `${formatBytes(done / seconds)}/s` : '';
  if (total === null || total === 0) {
    return `${label} ${formatBytes(done)} ${rate}`.trimEnd().slice(0, width - 1);
  }
  const pct = Math.min(100, Math.floor((done * 100) / total));
  const tail = ` ${String(pct).padStart(3)}% ${formatBytes(done)}/${formatBytes(total)} ${rate}`.trimEnd();
  const room = width - 1 - label.length - tail.length - 3;
  if (room < 10) return `${label}${tail}`.slice(0, width - 1); // too narrow for a bar
  const filled = Math.round((room * Math.min(done, total)) / total);
  return `${label} [${'#'.repeat(filled)}${'-'.repeat(room - filled)}]${tail}`.slice(0, width - 1);
}

export interface Progress {
  update(done: number, total: number | null): void;
  /** Draws the final state and ends the line. */
  finish(): void;
}

/** A bar on `out` (a TTY), redrawn at most ten times a second. */
export function progressBar(out: NodeJS.WriteStream, label: string): Progress {
  const started = Date.now();
  let last = 0;
  let done = 0;
  let total: number | null = null;
  let drawn = false;
  const draw = () => {
    out.write(`\r${renderProgress(label, done, total, (Date.now() - started) / 1000, out.columns || 80)}\x1b[K`);
    drawn = true;
  };
  return {
    update(d, t) {
      done = d;
      total = t;
      const now = Date.now();
      if (now - last >= 100) {
        last = now;
        draw();
      }
    },
    finish() {
      draw();
      if (drawn) out.write('\n');
    },
  };
}
