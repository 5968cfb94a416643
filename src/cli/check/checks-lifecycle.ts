/** Checks of DEVICE_RESET and, where offered, migration (DEVICE_FEATURE). */
import { getMigrationState, migrationFlags, setMigrationState } from '../../client/migrate.js';
import { DeviceFeatureFlag, DeviceInfoFlag, FeatureId, MigrationFlag, MigrationState } from '../../protocol/constants.js';
import { ClientError } from '../../client/client.js';
import { errnoName, expectInSync } from './context.js';
import { expect, CheckSkip, type Check } from './types.js';

export const LIFECYCLE_CHECKS: Check[] = [
  {
    id: 'reset',
    title: 'DEVICE_RESET succeeds when the device says it resets, and the device answers after',
    async run(ctx) {
      const { info } = await ctx.facts();
      if (!(info.flags & DeviceInfoFlag.RESET)) throw new CheckSkip('the device does not offer reset');
      const c = await ctx.client();
      await c.reset();
      await expectInSync(c, 'DEVICE_RESET');
    },
  },
  {
    id: 'migration.version-agrees',
    title: 'VERSION advertises migration exactly when DEVICE_FEATURE offers it',
    async run(ctx) {
      const c = await ctx.client();
      const advertised = c.server.migration !== undefined;
      let refusal: string | undefined;
      try {
        await c.deviceFeature(FeatureId.MIGRATION | DeviceFeatureFlag.GET | DeviceFeatureFlag.PROBE, { kind: 'none' }, 8);
      } catch (e) {
        if (!(e instanceof ClientError)) throw e;
        refusal = errnoName(e.errno);
      }
      const offered = refusal === undefined;
      // A client that trusts VERSION would plan a migration the device then refuses.
      expect(!advertised || offered, `VERSION advertises migration (${JSON.stringify(c.server.migration)}) but DEVICE_FEATURE PROBE of MIGRATION is refused with ${refusal}`);
      expect(advertised || !offered, 'DEVICE_FEATURE offers migration but VERSION has no migration capability');
      return advertised ? 'both offer migration' : `neither offers migration (PROBE: ${refusal})`;
    },
  },
  {
    id: 'migration.feature',
    title: 'DEVICE_FEATURE probe: migration offered with STOP_COPY',
    async run(ctx) {
      const c = await ctx.client();
      if (!(await c.probeFeature(FeatureId.MIGRATION, DeviceFeatureFlag.GET))) throw new CheckSkip('migration not offered');
      const flags = await migrationFlags(c);
      expect(flags & MigrationFlag.STOP_COPY, `migration flags 0x${flags.toString(16)} lack STOP_COPY`);
      return `flags 0x${flags.toString(16)}`;
    },
  },
  {
    id: 'migration.states',
    title: 'migration state: RUNNING at start, STOP and back to RUNNING',
    async run(ctx) {
      const c = await ctx.client();
      if (!(await c.probeFeature(FeatureId.MIG_DEVICE_STATE, DeviceFeatureFlag.GET))) throw new CheckSkip('migration not offered');
      const start = await getMigrationState(c);
      expect(start === MigrationState.RUNNING, `state ${MigrationState[start] ?? start} at start, want RUNNING`);
      await setMigrationState(c, MigrationState.STOP);
      const stopped = await getMigrationState(c);
      await setMigrationState(c, MigrationState.RUNNING);
      const running = await getMigrationState(c);
      expect(stopped === MigrationState.STOP, `state ${MigrationState[stopped] ?? stopped} after SET STOP`);
      expect(running === MigrationState.RUNNING, `state ${MigrationState[running] ?? running} after SET RUNNING`);
    },
  },
];
