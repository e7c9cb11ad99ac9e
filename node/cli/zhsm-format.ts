/** The human forms of `zhsm status` (also the mount's /.zhsm/status), `zhsm servers` and `zhsm power`. */
import type { RouteReport, StatusReport } from '../daemon/node.ts';
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
  lines.push(
    `cell ${status.cell}: primary ${primary}, term ${status.term}, commit index ${status.commitIndex}`,
  );
  lines.push(
    `this node: ${status.node.name} ${status.node.peerId}${status.node.controllerId > 0 ? `, controller ${status.node.controllerId}` : ''}${status.node.storage ? ', storage server' : ''}`,
  );
  lines.push('');
  lines.push(
    `controllers (voters ${status.voters.join(',') || '-'}; learners ${status.learners.join(',') || '-'}):`,
  );
  lines.push(
    table([
      ['ID', 'ROLE', 'TERM', 'COMMIT', 'APPLIED', 'PEER'],
      ...status.controllers.map((c) => [
        String(c.id),
        c.role,
        String(c.term),
        String(c.commitIndex),
        String(c.appliedIndex),
        c.peerId,
      ]),
    ]),
  );
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
