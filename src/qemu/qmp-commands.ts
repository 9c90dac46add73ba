/**
 * The QMP commands presync uses, with their argument and return types as of
 * QEMU 7.2 (qapi/migration.json, qapi/run-state.json, qapi/machine.json,
 * qapi/qom.json, qapi/block-core.json, qapi/block-export.json), and a
 * validator per return value.
 */
import {
  bad,
  expectArray,
  expectObject,
  field,
  isBool,
  isNonNegInt,
  isNumber,
  isObject,
  isString,
  optField,
  type Json,
  type JsonObject,
} from './qmp-validate.ts';

export type MigrationStatus =
  | 'none'
  | 'setup'
  | 'cancelling'
  | 'cancelled'
  | 'active'
  | 'postcopy-active'
  | 'postcopy-paused'
  | 'postcopy-recover'
  | 'completed'
  | 'failed'
  | 'colo'
  | 'pre-switchover'
  | 'device'
  | 'wait-unplug';

export type MigrationCapabilityName =
  | 'xbzrle'
  | 'rdma-pin-all'
  | 'auto-converge'
  | 'zero-blocks'
  | 'compress'
  | 'events'
  | 'postcopy-ram'
  | 'x-colo'
  | 'release-ram'
  | 'block'
  | 'return-path'
  | 'pause-before-switchover'
  | 'multifd'
  | 'dirty-bitmaps'
  | 'postcopy-blocktime'
  | 'late-block-activate'
  | 'x-ignore-shared'
  | 'validate-uuid'
  | 'background-snapshot'
  | 'zero-copy-send'
  | 'postcopy-preempt';

export interface MigrationCapability {
  capability: MigrationCapabilityName;
  state: boolean;
}

export interface StatusInfo {
  running: boolean;
  status: string;
}

export interface MigrationRamStats {
  transferred: number;
  remaining: number;
  total: number;
  duplicate: number;
  normal: number;
  normalBytes: number;
  dirtySyncCount: number;
  mbps: number;
  pageSize: number;
  multifdBytes: number;
  precopyBytes: number | undefined;
  downtimeBytes: number | undefined;
}

export interface MigrationInfo {
  status: MigrationStatus | undefined;
  ram: MigrationRamStats | undefined;
  totalTimeMs: number | undefined;
  expectedDowntimeMs: number | undefined;
  downtimeMs: number | undefined;
  setupTimeMs: number | undefined;
  errorDesc: string | undefined;
  /** Where an incoming migration listens (port resolved when 0 was asked for). */
  socketAddresses: { host: string; port: string }[];
}

export interface MemdevInfo {
  id: string | undefined;
  size: number;
  share: boolean | undefined;
  prealloc: boolean;
}

export interface MigrateParameters {
  'max-bandwidth'?: number;
  'downtime-limit'?: number;
  'multifd-channels'?: number;
  'x-checkpoint-delay'?: number;
}

/** Argument and return types per command; `execute()` is typed from this map. */
export interface QmpCommands {
  qmp_capabilities: { args: { enable?: string[] } | undefined; ret: Record<string, never> };
  'query-status': { args: undefined; ret: StatusInfo };
  'query-migrate': { args: undefined; ret: MigrationInfo };
  'query-migrate-capabilities': { args: undefined; ret: MigrationCapability[] };
  'query-migrate-parameters': { args: undefined; ret: JsonObject };
  'migrate-set-capabilities': { args: { capabilities: MigrationCapability[] }; ret: Record<string, never> };
  'migrate-set-parameters': { args: MigrateParameters; ret: Record<string, never> };
  migrate: { args: { uri: string; detach?: boolean }; ret: Record<string, never> };
  'migrate-incoming': { args: { uri: string }; ret: Record<string, never> };
  'migrate-continue': { args: { state: MigrationStatus }; ret: Record<string, never> };
  migrate_cancel: { args: undefined; ret: Record<string, never> };
  cont: { args: undefined; ret: Record<string, never> };
  stop: { args: undefined; ret: Record<string, never> };
  quit: { args: undefined; ret: Record<string, never> };
  'query-memdev': { args: undefined; ret: MemdevInfo[] };
  'qom-get': { args: { path: string; property: string }; ret: Json };
  // Block devices, jobs and NBD (qapi/block-core.json, qapi/block-export.json, QEMU 7.2).
  'query-block': { args: undefined; ret: BlockInfo[] };
  'query-block-jobs': { args: undefined; ret: BlockJobInfo[] };
  'blockdev-add': { args: BlockdevAddNbd; ret: Record<string, never> };
  'blockdev-del': { args: { 'node-name': string }; ret: Record<string, never> };
  'blockdev-mirror': { args: BlockdevMirrorArgs; ret: Record<string, never> };
  'block-job-cancel': { args: { device: string; force?: boolean }; ret: Record<string, never> };
  'nbd-server-start': { args: { addr: { type: 'inet'; data: { host: string; port: string } }; 'max-connections'?: number }; ret: Record<string, never> };
  'nbd-server-stop': { args: undefined; ret: Record<string, never> };
  'block-export-add': { args: { type: 'nbd'; id: string; 'node-name': string; writable: boolean; name: string }; ret: Record<string, never> };
  'block-export-del': { args: { id: string; mode?: 'safe' | 'hard' }; ret: Record<string, never> };
}

/** One entry of query-block: a BlockBackend (a -drive, or a device's backend with -blockdev). */
export interface BlockInfo {
  /** The BlockBackend name (-drive id=...); '' for a -blockdev attached to a device. */
  device: string;
  qdev: string | undefined;
  /** The top node, when a medium is inserted. */
  inserted: { nodeName: string; file: string; ro: boolean; drv: string } | undefined;
}

export type BlockJobStatus = 'undefined' | 'created' | 'running' | 'paused' | 'ready' | 'standby' | 'waiting' | 'pending' | 'aborting' | 'concluded' | 'null';

export interface BlockJobInfo {
  type: string;
  /** The job id. */
  device: string;
  len: number;
  offset: number;
  ready: boolean;
  status: BlockJobStatus;
  error: string | undefined;
}

/** blockdev-add for an NBD client node (BlockdevOptionsNbd). */
export interface BlockdevAddNbd {
  driver: 'nbd';
  'node-name': string;
  server: { type: 'inet'; host: string; port: string };
  export: string;
}

export interface BlockdevMirrorArgs {
  'job-id': string;
  device: string;
  target: string;
  sync: 'full' | 'top' | 'none';
  'copy-mode'?: 'background' | 'write-blocking';
  'on-source-error'?: 'report' | 'stop' | 'enospc' | 'ignore';
  'on-target-error'?: 'report' | 'stop' | 'enospc' | 'ignore';
  'auto-finalize'?: boolean;
  'auto-dismiss'?: boolean;
}

export type QmpCommandName = keyof QmpCommands;

const MIGRATION_STATUSES = new Set<string>([
  'none', 'setup', 'cancelling', 'cancelled', 'active', 'postcopy-active', 'postcopy-paused',
  'postcopy-recover', 'completed', 'failed', 'colo', 'pre-switchover', 'device', 'wait-unplug',
]);

function emptyReturn(cmd: string) {
  return (v: unknown): Record<string, never> => {
    const o = expectObject(v, cmd);
    if (Object.keys(o).length !== 0) throw bad(cmd, 'expected an empty object');
    return {};
  };
}

function statusInfo(v: unknown): StatusInfo {
  const o = expectObject(v, 'query-status');
  return {
    running: field(o, 'running', 'query-status', isBool, 'a boolean'),
    status: field(o, 'status', 'query-status', isString, 'a string'),
  };
}

function ramStats(v: unknown): MigrationRamStats {
  const w = 'query-migrate ram';
  const o = expectObject(v, w);
  const n = (k: string) => field(o, k, w, isNonNegInt, 'a non-negative integer');
  return {
    transferred: n('transferred'),
    remaining: n('remaining'),
    total: n('total'),
    duplicate: n('duplicate'),
    normal: n('normal'),
    normalBytes: n('normal-bytes'),
    dirtySyncCount: n('dirty-sync-count'),
    mbps: field(o, 'mbps', w, isNumber, 'a number'),
    pageSize: n('page-size'),
    multifdBytes: optField(o, 'multifd-bytes', w, isNonNegInt, 'a non-negative integer') ?? 0,
    precopyBytes: optField(o, 'precopy-bytes', w, isNonNegInt, 'a non-negative integer'),
    downtimeBytes: optField(o, 'downtime-bytes', w, isNonNegInt, 'a non-negative integer'),
  };
}

export function parseMigrationInfo(v: unknown): MigrationInfo {
  const w = 'query-migrate';
  const o = expectObject(v, w);
  const status = optField(o, 'status', w, isString, 'a string');
  if (status !== undefined && !MIGRATION_STATUSES.has(status)) throw bad(w, `unknown status "${status}"`);
  const ms = (k: string) => optField(o, k, w, isNonNegInt, 'a non-negative integer');
  const socketAddresses: { host: string; port: string }[] = [];
  if ('socket-address' in o) {
    for (const a of expectArray(o['socket-address'], `${w} socket-address`)) {
      if (isObject(a) && isString(a.host) && isString(a.port)) socketAddresses.push({ host: a.host, port: a.port });
    }
  }
  return {
    status: status as MigrationStatus | undefined,
    ram: 'ram' in o ? ramStats(o.ram) : undefined,
    totalTimeMs: ms('total-time'),
    expectedDowntimeMs: ms('expected-downtime'),
    downtimeMs: ms('downtime'),
    setupTimeMs: ms('setup-time'),
    errorDesc: optField(o, 'error-desc', w, isString, 'a string'),
    socketAddresses,
  };
}

function capabilities(v: unknown): MigrationCapability[] {
  const w = 'query-migrate-capabilities';
  return expectArray(v, w).map((c) => {
    const o = expectObject(c, w);
    return {
      capability: field(o, 'capability', w, isString, 'a string') as MigrationCapabilityName,
      state: field(o, 'state', w, isBool, 'a boolean'),
    };
  });
}

function memdevs(v: unknown): MemdevInfo[] {
  const w = 'query-memdev';
  return expectArray(v, w).map((m) => {
    const o = expectObject(m, w);
    return {
      id: optField(o, 'id', w, isString, 'a string'),
      size: field(o, 'size', w, isNonNegInt, 'a non-negative integer'),
      share: optField(o, 'share', w, isBool, 'a boolean'),
      prealloc: field(o, 'prealloc', w, isBool, 'a boolean'),
    };
  });
}

function blockInfos(v: unknown): BlockInfo[] {
  const w = 'query-block';
  return expectArray(v, w).map((b) => {
    const o = expectObject(b, w);
    let inserted: BlockInfo['inserted'];
    if ('inserted' in o) {
      const i = expectObject(o.inserted, `${w} inserted`);
      inserted = {
        nodeName: field(i, 'node-name', w, isString, 'a string'),
        file: field(i, 'file', w, isString, 'a string'),
        ro: field(i, 'ro', w, isBool, 'a boolean'),
        drv: field(i, 'drv', w, isString, 'a string'),
      };
    }
    return { device: field(o, 'device', w, isString, 'a string'), qdev: optField(o, 'qdev', w, isString, 'a string'), inserted };
  });
}

function blockJobs(v: unknown): BlockJobInfo[] {
  const w = 'query-block-jobs';
  return expectArray(v, w).map((j) => {
    const o = expectObject(j, w);
    return {
      type: field(o, 'type', w, isString, 'a string'),
      device: field(o, 'device', w, isString, 'a string'),
      len: field(o, 'len', w, isNonNegInt, 'a non-negative integer'),
      offset: field(o, 'offset', w, isNonNegInt, 'a non-negative integer'),
      ready: field(o, 'ready', w, isBool, 'a boolean'),
      status: field(o, 'status', w, isString, 'a string') as BlockJobStatus,
      error: optField(o, 'error', w, isString, 'a string'),
    };
  });
}

type Validators = { [K in QmpCommandName]: (v: unknown) => QmpCommands[K]['ret'] };

export const returnValidators: Validators = {
  qmp_capabilities: emptyReturn('qmp_capabilities'),
  'query-status': statusInfo,
  'query-migrate': parseMigrationInfo,
  'query-migrate-capabilities': capabilities,
  'query-migrate-parameters': (v) => expectObject(v, 'query-migrate-parameters'),
  'migrate-set-capabilities': emptyReturn('migrate-set-capabilities'),
  'migrate-set-parameters': emptyReturn('migrate-set-parameters'),
  migrate: emptyReturn('migrate'),
  'migrate-incoming': emptyReturn('migrate-incoming'),
  'migrate-continue': emptyReturn('migrate-continue'),
  migrate_cancel: emptyReturn('migrate_cancel'),
  cont: emptyReturn('cont'),
  stop: emptyReturn('stop'),
  quit: emptyReturn('quit'),
  'query-memdev': memdevs,
  'qom-get': (v) => v as Json,
  'query-block': blockInfos,
  'query-block-jobs': blockJobs,
  'blockdev-add': emptyReturn('blockdev-add'),
  'blockdev-del': emptyReturn('blockdev-del'),
  'blockdev-mirror': emptyReturn('blockdev-mirror'),
  'block-job-cancel': emptyReturn('block-job-cancel'),
  'nbd-server-start': emptyReturn('nbd-server-start'),
  'nbd-server-stop': emptyReturn('nbd-server-stop'),
  'block-export-add': emptyReturn('block-export-add'),
  'block-export-del': emptyReturn('block-export-del'),
};

export function isKnownCommand(cmd: string): cmd is QmpCommandName {
  return Object.prototype.hasOwnProperty.call(returnValidators, cmd);
}
