/**
 * Structured component loggers (pino). No module-level singleton: create a root logger per
 * process or per simulated node and hand children to components.
 */
import { type DestinationStream, type Logger, pino } from 'pino';

export type { Logger };

export interface LoggerOptions {
  /** Component name, e.g. 'store', 'raft'. */
  readonly component: string;
  /** Node identity (peer id, controller id), if any. */
  readonly node?: string;
  /** pino level; default from ZHSM_LOG_LEVEL or 'info'. */
  readonly level?: string;
  /** Where to write; default stderr. */
  readonly destination?: DestinationStream;
}

export function createLogger(options: LoggerOptions): Logger {
  const level = options.level ?? process.env.ZHSM_LOG_LEVEL ?? 'info';
  const bindings: Record<string, string> = { component: options.component };
  if (options.node !== undefined) bindings.node = options.node;
  const destination = options.destination ?? pino.destination({ fd: 2, sync: false });
  return pino({ level, base: bindings, timestamp: pino.stdTimeFunctions.isoTime }, destination);
}

/** A logger that drops everything (tests, benchmarks). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
