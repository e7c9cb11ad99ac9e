/** Durations on command lines and in config: "90s", "15m", "24h", "7d", "500ms". */
import { InvalidArgumentError } from './errors.ts';

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** "90s", "15m", "24h", "7d", "500ms" -> milliseconds. */
export function parseDuration(text: string): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(text.trim());
  if (match === null)
    throw new InvalidArgumentError(`invalid duration ${JSON.stringify(text)}: use e.g. 30s, 15m, 24h, 7d`);
  const ms = Math.round(Number(match[1]) * UNIT_MS[match[2]!]!);
  if (!Number.isSafeInteger(ms) || ms <= 0) throw new InvalidArgumentError(`duration out of range: ${text}`);
  return ms;
}
