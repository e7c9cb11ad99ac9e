/**
 * The human forms of `zhsm status` (also the mount's /.zhsm/status), `zhsm servers`, `zhsm power`,
 * `zhsm backends|tokens|token list|controllers`.
 */
import type { JobStatus } from '../daemon/jobs.ts';
import type { RouteReport, StatusReport } from '../daemon/node.ts';
import type {
  BackendJson,
  ControllersReport,
  JoinTokenJson,
  OpenTokenJson,
  ReplicationStatus,
} from '../daemon/ops-admin.ts';
import type { ControllerAnswer } from '../daemon/protocols.ts';
import type { PowerEventJson, PowerServerJson } from '../hsm/power-admin.ts';

export function formatBytes(value: number): string {
  return bytes(value);
}

function bytes(value: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let scaled = value;
  let unit = 0;
  while (scaled >= 1024 && unit < units.length - 1) {
    scaled /= 1024;
    unit += 1;
  }
  return `${scaled.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}

/** Storage servers, each with its backends (capacity, free space, path). */
function serverLines(status: StatusReport): string[] {
  const lines: string[] = ['storage servers:'];
  if (status.servers.length === 0) lines.push('  (none registered)');
  for (const server of status.servers) {
    lines.push(
      `  ${server.name} ${server.online ? 'online' : 'OFFLINE'} ${server.power}${wakeProgress(server)} ${server.peerId}`,
    );
    lines.push(
      table([
        ['  BACKEND', 'CAPACITY', 'FREE', 'PATH'],
        ...server.backends.map((b) => [`  ${b.uuid}`, bytes(b.capacityBytes), bytes(b.freeBytes), b.path]),
      ]),
    );
  }
  return lines;
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)));
  return rows
    .map((row) => `  ${row.map((cell, i) => cell.padEnd(widths[i]!)).join('  ')}`.trimEnd())
    .join('\n');
}

export function formatStatus(status: StatusReport): string {
  const lines: string[] = [];
  const primary =
    status.primary === null
      ? 'NO PRIMARY (no quorum reachable)'
      : `controller ${status.primary.id} (${status.primary.peerId})`;
  const pinned = status.pinnedLeader ? `, pinned to controller ${status.pinnedLeader} (manual)` : '';
  const level = status.metadataLevel === undefined ? '' : `, metadata level ${status.metadataLevel}`;
  lines.push(
    `cell ${status.cell}: primary ${primary}, term ${status.term}, commit index ${status.commitIndex}${level}${pinned}`,
  );
  lines.push(
    `this node: ${status.node.name} ${status.node.peerId}${status.node.controllerId > 0 ? `, controller ${status.node.controllerId}` : ''}${status.node.storage ? ', storage server' : ''}`,
  );
  lines.push('');
  lines.push(
    `controllers (voters ${status.voters.join(',') || '-'}; learners ${status.learners.join(',') || '-'}):`,
  );
  const replication = new Map((status.replication ?? []).map((r) => [r.id, r]));
  lines.push(
    table([
      ['ID', 'ROLE', 'TERM', 'COMMIT', 'APPLIED', 'MEMBER', 'LAG', 'LEVEL', 'PEER'],
      ...status.controllers.map((c) => [
        String(c.id),
        c.role || 'not running',
        String(c.term),
        String(c.commitIndex),
        String(c.appliedIndex),
        replication.get(c.id)?.membership ?? '?',
        lagText(replication.get(c.id)),
        String(c.softwareLevel ?? 0),
        c.peerId,
      ]),
    ]),
  );
  if (status.replication !== undefined) lines.push(`replication: ${replicationSummary(status.replication)}`);
  if (status.openTokens !== undefined)
    lines.push(`open tokens: ${status.openTokens === null ? 'unknown (no primary)' : status.openTokens}`);
  if (status.jobs !== undefined) lines.push(...formatJobs(status.jobs));
  if (status.conflicts !== undefined && status.conflicts.count > 0) {
    lines.push(`split-brain conflicts: ${status.conflicts.count} (zhsm conflicts lists them)`);
    for (const conflict of status.conflicts.recent)
      lines.push(
        `  ${conflict.path}: ${conflict.winnerServer}'s version won; ${conflict.loserServer}'s kept as ${conflict.kept}`,
      );
  }
  lines.push('');
  lines.push(...serverLines(status));
  lines.push('');
  lines.push(`members: ${status.members}`);
  const paths = status.paths ?? [];
  if (paths.length > 0) {
    const serverNames = new Map(status.servers.map((s) => [s.peerId, s.name]));
    const label = (peerId: string, controllerId: number) =>
      [controllerId > 0 ? `controller ${controllerId}` : '', serverNames.get(peerId) ?? '']
        .filter(Boolean)
        .join(', ') || 'client';
    lines.push('paths from this node:');
    lines.push(
      table([
        ['  PEER', 'ROLE', 'PATH', 'VIA'],
        ...paths.map((p) => [`  ${p.peerId}`, label(p.peerId, p.controllerId), p.path, p.via ?? '']),
      ]),
    );
  }
  if ((status.relayReservations ?? []).length > 0)
    lines.push(`relay reservations (reachable through): ${status.relayReservations.join(', ')}`);
  return lines.join('\n');
}

/** `zhsm servers [--routes]`: servers with backends; members' routing and this node's paths. */
export function formatServers(status: StatusReport, routes?: readonly RouteReport[]): string {
  const lines = serverLines(status);
  if (routes === undefined) return lines.join('\n');
  const names = new Map(status.servers.map((s) => [s.peerId, s.name]));
  lines.push('', 'routing (from this node):');
  for (const member of routes) {
    const role =
      [
        member.controllerId > 0 ? `controller ${member.controllerId}` : '',
        names.has(member.peerId) ? 'storage' : '',
      ]
        .filter(Boolean)
        .join(', ') || 'client';
    lines.push(`  ${member.peerId} (${role})${member.self ? ' — this node' : ''}`);
    lines.push(
      `    subnets: ${member.subnets.join(', ') || '(not announced)'}  host: ${member.hostname || '-'}`,
    );
    for (const route of member.routes) lines.push(`    route: from ${route.subnet} at ${route.address}`);
    if (member.self || member.paths === undefined) continue;
    const connection = member.connection;
    lines.push(
      `    connected: ${connection === undefined || connection.path === 'none' ? 'no' : connection.path === 'direct' ? 'direct' : `relayed via ${connection.via}`}`,
    );
    for (const address of member.paths.direct) lines.push(`    direct:  ${address}`);
    for (const relayed of member.paths.relayed) lines.push(`    relayed: ${relayed.address}`);
    for (const address of member.paths.other) lines.push(`    other:   ${address}`);
  }
  return lines.join('\n');
}

/** " (waking for 12 s of at most 300 s)" for a server being woken; '' otherwise. */
function wakeProgress(server: StatusReport['servers'][number]): string {
  if (server.power !== 'WAKING' || !server.powerChangedMs) return '';
  const elapsed = Math.max(0, Math.round((Date.now() - server.powerChangedMs) / 1000));
  const limit = server.wakeTimeoutMs ? ` of at most ${Math.round(server.wakeTimeoutMs / 1000)} s` : '';
  return ` (waking for ${elapsed} s${limit}: ${server.powerReason ?? ''})`;
}

/** "3 s", "4 min", "2 h", "5 d" (rounded down); '-' for 0. */
export function duration(ms: number): string {
  if (ms <= 0) return '-';
  if (ms < 1000) return `${ms} ms`;
  const s = Math.floor(ms / 1000);
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.floor(s / 60)} min`;
  if (s < 172_800) return `${Math.floor(s / 3600)} h`;
  return `${Math.floor(s / 86_400)} d`;
}

function ago(nowMs: number, ms: number): string {
  return ms <= 0 ? 'never' : `${duration(Math.max(0, nowMs - ms))} ago`;
}

export interface PowerPolicyJson {
  idleTimeoutMs: number;
  wakeTimeoutMs: number;
  retryBackoffMs: number;
  retryBackoffMaxMs: number;
}

export function formatPowerPolicy(policy: PowerPolicyJson): string {
  return `power policy: idle timeout ${policy.idleTimeoutMs === 0 ? 'never' : duration(policy.idleTimeoutMs)}, wake timeout ${duration(policy.wakeTimeoutMs)}, retry backoff ${duration(policy.retryBackoffMs)} doubling up to ${duration(policy.retryBackoffMaxMs)}`;
}

/** `zhsm power status`: one row per storage server. */
export function formatPowerStatus(report: {
  nowMs: number;
  policy: PowerPolicyJson;
  servers: PowerServerJson[];
}): string {
  const lines = [formatPowerPolicy(report.policy), ''];
  if (report.servers.length === 0) lines.push('(no storage servers registered)');
  else
    lines.push(
      table([
        ['SERVER', 'UUID', 'POWER', 'SINCE', 'ONLINE', 'LAST ACCESS', 'DRIVER', 'REASON'],
        ...report.servers.map((s) => [
          s.name,
          s.uuid.slice(0, 12),
          s.power + (s.powerFailures > 0 ? ` (${s.powerFailures} failed)` : ''),
          ago(report.nowMs, s.powerChangedMs),
          s.online ? 'yes' : 'no',
          ago(report.nowMs, s.lastAccessMs),
          s.driver || '(none)',
          s.powerReason.slice(0, 80),
        ]),
      ]).replace(/^ {2}/gm, ''),
    );
  return lines.join('\n');
}

/** `zhsm power log`: the events, oldest first. */
export function formatPowerLog(events: readonly PowerEventJson[]): string {
  if (events.length === 0) return '(no power events)';
  return table([
    ['#', 'TIME', 'SERVER', 'FROM', 'TO', 'REASON'],
    ...events.map((e) => [
      String(e.sequence),
      new Date(e.timeMs).toISOString(),
      e.name,
      e.from,
      e.to,
      e.reason.slice(0, 120),
    ]),
  ]).replace(/^ {2}/gm, '');
}

/** One server after `zhsm power on|off|config`. */
export function formatPowerServer(server: PowerServerJson): string {
  const config = server.config === null ? 'no power configuration' : JSON.stringify(server.config);
  return `${server.name} (${server.uuid}): ${server.power}${server.online ? ', online' : ', offline'}${server.powerReason ? ` — ${server.powerReason}` : ''}\n  ${config}`;
}

// ---- replication, jobs ---------------------------------------------------------------------------

function lagText(row: ReplicationStatus | undefined): string {
  if (row === undefined || row.lag === null) return '?';
  return String(row.lag);
}

/** "healthy (3 voters, quorum 2)" or what is wrong. */
export function replicationSummary(rows: readonly ReplicationStatus[]): string {
  if (rows.length === 0) return 'unknown (no primary)';
  if (rows.every((r) => r.lag === null)) return 'unknown (no primary answers)';
  const voters = rows.filter((r) => r.membership === 'voter');
  const quorum = Math.floor(voters.length / 2) + 1;
  const healthyVoters = voters.filter((r) => r.healthy).length;
  const problems = rows
    .filter((r) => !r.healthy)
    .map((r) =>
      !r.reachable
        ? `controller ${r.id} unreachable${r.lag ? ` (${r.lag} entries behind)` : ''}`
        : r.membership === 'none'
          ? `controller ${r.id} not in the consensus membership yet`
          : r.lag === null
            ? `controller ${r.id} unknown to the primary`
            : `controller ${r.id} ${r.lag} entries behind`,
    );
  const head =
    healthyVoters < quorum
      ? `AT RISK: ${healthyVoters} of ${voters.length} voters healthy, ${quorum} needed`
      : problems.length === 0
        ? `healthy (${voters.length} voter${voters.length === 1 ? '' : 's'}, quorum ${quorum})`
        : `degraded (${healthyVoters} of ${voters.length} voters healthy, quorum ${quorum})`;
  return problems.length === 0 ? head : `${head}: ${problems.join('; ')}`;
}

/** "[########------------]  40%" (width characters). */
export function progressBar(done: number, total: number, width = 20): string {
  if (total <= 0) return `[${'?'.repeat(width)}]`;
  const share = Math.min(1, Math.max(0, done / total));
  const filled = Math.round(share * width);
  return `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${String(Math.floor(share * 100)).padStart(3)}%`;
}

/** The jobs section of `zhsm status`: running jobs with a progress bar, then finished ones. */
export function formatJobs(jobs: readonly JobStatus[], nowMs = Date.now()): string[] {
  if (jobs.length === 0) return ['jobs: none'];
  const lines = ['jobs:'];
  for (const job of jobs) {
    const counters = Object.entries(job.counters)
      .map(([name, value]) => `${name} ${value}`)
      .join(', ');
    const amount = job.total > 0 ? `${job.done}/${job.total} ${job.unit}` : `${job.done} ${job.unit} so far`;
    const bar = job.total > 0 ? ` ${progressBar(job.done, job.total)}` : '';
    if (job.state === 'running')
      lines.push(
        `  ${job.kind} ${job.id} running, ${job.phase}${bar} ${amount}, for ${duration(nowMs - job.startedMs)}${counters ? ` (${counters})` : ''}`,
      );
    else
      lines.push(
        `  ${job.kind} ${job.id} ${job.state} ${ago(nowMs, job.finishedMs ?? job.updatedMs)}, ${amount}${counters ? ` (${counters})` : ''}${job.error ? `: ${job.error}` : ''}`,
      );
  }
  return lines;
}

// ---- backends, tokens, join tokens, controllers ------------------------------------------------

/** `zhsm backends`: one row per backend. */
export function formatBackends(backends: readonly BackendJson[]): string {
  if (backends.length === 0) return '(no backends registered)';
  const rows = backends.map((b) => [
    b.server + (b.online ? '' : ` (${b.power === 'ON' || b.power === '' ? 'offline' : b.power})`),
    b.uuid,
    b.path,
    b.tags.join(',') || '-',
    bytes(b.capacityBytes),
    bytes(b.freeBytes),
    b.capacityBytes > 0 ? `${b.usedPercent.toFixed(1)} %` : '-',
  ]);
  const capacity = backends.reduce((sum, b) => sum + b.capacityBytes, 0);
  const free = backends.reduce((sum, b) => sum + b.freeBytes, 0);
  return [
    table([['SERVER', 'BACKEND', 'PATH', 'TAGS', 'CAPACITY', 'FREE', 'USED'], ...rows]).replace(
      /^ {2}/gm,
      '',
    ),
    '',
    `${backends.length} backend${backends.length === 1 ? '' : 's'}: ${bytes(capacity)} capacity, ${bytes(free)} free`,
  ].join('\n');
}

/** A peer id shortened for tables: "12D3KooW…abcdef". */
function shortPeer(peerId: string): string {
  return peerId.length > 20 ? `${peerId.slice(0, 8)}…${peerId.slice(-6)}` : peerId;
}

/** `zhsm tokens`: the open files of the cell. */
export function formatOpenTokens(report: { nowMs: number; tokens: readonly OpenTokenJson[] }): string {
  if (report.tokens.length === 0) return '(no open files)';
  return [
    table([
      ['OBJECT', 'PATH', 'MODE', 'HOLDER', 'OPENED', 'EXPIRES IN'],
      ...report.tokens.map((t) => [
        t.object.slice(0, 16),
        t.path,
        t.mode,
        shortPeer(t.holder),
        ago(report.nowMs, t.openedMs),
        t.expiresMs <= report.nowMs ? 'expired' : duration(t.expiresMs - report.nowMs),
      ]),
    ]).replace(/^ {2}/gm, ''),
    '',
    `${report.tokens.length} open token${report.tokens.length === 1 ? '' : 's'}`,
  ].join('\n');
}

/** `zhsm token list`: join tokens (never their secrets). */
export function formatJoinTokens(report: { nowMs: number; tokens: readonly JoinTokenJson[] }): string {
  if (report.tokens.length === 0) return '(no valid join tokens; make one with: zhsm token create)';
  return table([
    ['ID', 'STATE', 'CREATED', 'EXPIRES'],
    ...report.tokens.map((t) => [
      t.id,
      t.state,
      new Date(t.createdMs).toISOString(),
      `${new Date(t.expiresMs).toISOString()}${t.state === 'valid' ? ` (in ${duration(t.expiresMs - report.nowMs)})` : ''}`,
    ]),
  ]).replace(/^ {2}/gm, '');
}

/** `zhsm controllers`: the consensus view. */
export function formatControllers(report: ControllersReport): string {
  const primary =
    report.primary === null ? 'NO PRIMARY (no quorum reachable)' : `controller ${report.primary.id}`;
  const lines = [
    `primary: ${primary}, term ${report.term}, last index ${report.lastIndex}, commit index ${report.commitIndex}`,
    `leadership: ${report.pinnedLeader > 0 ? `pinned to controller ${report.pinnedLeader} (manual: no failover while it is down)` : 'elected (the lowest live up-to-date voter leads)'}`,
    `voters: ${report.voters.join(', ') || '-'}; learners: ${report.learners.join(', ') || '-'}`,
    `metadata level: ${report.metadataLevel ?? 'unknown'} (LEVEL: what each controller's zhsm applies; the primary raises the cell's level once every controller runs a newer one)`,
    '',
    table([
      ['ID', 'ROLE', 'MEMBER', 'TERM', 'COMMIT', 'APPLIED', 'MATCH', 'LAG', 'HEALTH', 'LEVEL', 'PEER'],
      ...report.controllers.map((c) => [
        `${c.id}${c.primary ? '*' : ''}${c.pinned ? ' (pinned)' : ''}`,
        c.role,
        c.membership,
        c.reachable ? String(c.term) : '-',
        c.reachable ? String(c.commitIndex) : '-',
        c.reachable ? String(c.appliedIndex) : '-',
        c.matchIndex === null ? '-' : String(c.matchIndex),
        c.lag === null ? '-' : String(c.lag),
        c.healthy ? 'ok' : c.reachable ? 'LAGGING' : 'DOWN',
        String(c.softwareLevel),
        c.peerId,
      ]),
    ]).replace(/^ {2}/gm, ''),
    '',
    `replication: ${replicationSummary(report.controllers)}`,
  ];
  return lines.join('\n');
}

/** After `zhsm controllers transfer|pin|unpin|add|remove`. */
export function formatControllerAnswer(answer: ControllerAnswer): string {
  return [
    `${answer.done ? '' : 'NOT DONE: '}${answer.message}`,
    `primary: ${answer.leaderId > 0 ? `controller ${answer.leaderId}` : 'unknown'}; voters ${answer.voters.join(', ') || '-'}; learners ${answer.learners.join(', ') || '-'}; ${answer.pinnedLeader > 0 ? `pinned to controller ${answer.pinnedLeader}` : 'not pinned'}`,
  ].join('\n');
}
