/**
 * Type-checks deploy/grafana/dashboards/drwatch.json against Grafana's published dashboard schema
 * (@grafana/schema, pinned in package.json). Run by scripts/grafana-schema-check.sh: `tsc --noEmit`.
 *
 * A JSON import is typed with widened literals ("dark" is string, 1 is number), so fields the schema types as
 * string enums or literal unions (VariableType, FieldColorModeId, MappingType, ...) cannot take the imported
 * value as is. The dashboard is therefore checked against `Widen<Dashboard>`: every required field present,
 * every value of the right kind, recursively. TypeScript does no excess-property check on an imported value,
 * so `Excess` names every key the schema does not declare (a typo such as "datsource" or "legendFromat").
 * tests/test_dashboard.py checks the enum values themselves against this package's runtime enums.
 */
import type { Dashboard, DataQuery } from '@grafana/schema';
import type { Options as BarGaugeOptions } from '@grafana/schema/dist/esm/raw/composable/bargauge/panelcfg/x/BarGaugePanelCfg_types.gen';
import type { Options as StatOptions } from '@grafana/schema/dist/esm/raw/composable/stat/panelcfg/x/StatPanelCfg_types.gen';
import type {
  FieldConfig as StateTimelineFieldConfig,
  Options as StateTimelineOptions,
} from '@grafana/schema/dist/esm/raw/composable/statetimeline/panelcfg/x/StateTimelinePanelCfg_types.gen';
import type {
  FieldConfig as TableFieldConfig,
  Options as TableOptions,
} from '@grafana/schema/dist/esm/raw/composable/table/panelcfg/x/TablePanelCfg_types.gen';
import type {
  FieldConfig as TimeSeriesFieldConfig,
  Options as TimeSeriesOptions,
} from '@grafana/schema/dist/esm/raw/composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen';

import dashboard from '../../deploy/grafana/dashboards/drwatch.json';

/** A Prometheus panel query (Grafana's PromQuery; the plugin's type is not part of @grafana/schema). */
interface PrometheusQuery extends DataQuery {
  expr: string;
  legendFormat?: string;
  instant?: boolean;
  range?: boolean;
  format?: 'time_series' | 'table' | 'heatmap';
  interval?: string;
  intervalFactor?: number;
  exemplar?: boolean;
  editorMode?: 'code' | 'builder';
}

type IsAny<T> = 0 extends 1 & T ? true : false;

/** The type a JSON import gives a value of schema type T: literals and enums widened to their primitive. */
type Widen<T> = IsAny<T> extends true
  ? T
  : T extends string
    ? string
    : T extends number
      ? number
      : T extends boolean
        ? boolean
        : T extends null | undefined
          ? T
          : T extends ReadonlyArray<infer E>
            ? Array<Widen<E>>
            : T extends object
              ? { [K in keyof T]: Widen<T[K]> }
              : T;

type ObjectPart<S> = Exclude<Extract<S, object>, ReadonlyArray<unknown>>;
type ArrayElement<S> = Extract<S, ReadonlyArray<unknown>> extends ReadonlyArray<infer E> ? E : never;
/** Every key of every member of a union (keyof a union gives only the common ones). */
type Keys<S> = S extends unknown ? keyof S : never;
type Prop<S, K extends PropertyKey> = S extends unknown ? (K extends keyof S ? S[K] : never) : never;
/** Keys a JSON object really has (array-literal normalisation adds the others as `?: undefined`). */
type Present<T> = { [K in keyof T]-?: [T[K]] extends [undefined] ? never : K }[keyof T] & string;

/** Paths of the keys in the JSON value type T that the schema type S does not declare; never when none. */
type Excess<T, S, Path extends string = '$'> =
  IsAny<S> extends true
    ? never
    : unknown extends S
      ? never
      : T extends ReadonlyArray<infer E>
        ? Excess<E, ArrayElement<S>, `${Path}[]`>
        : T extends object
          ? {
              [K in Present<T>]: K extends Keys<ObjectPart<S>>
                ? Excess<T[K], Prop<ObjectPart<S>, K>, `${Path}.${K}`>
                : `${Path}.${K}`;
            }[Present<T>]
          : never;

/** Fails to compile (naming the offending type) unless T is assignable to S. */
type Assignable<T extends S, S> = T;
/** Fails to compile (naming the offending paths) unless X is never. */
type None<X extends never> = X;

type Json = typeof dashboard;
type ElementOf<T> = T extends ReadonlyArray<infer E> ? E : never;
type PanelJson = ElementOf<Json['panels']>;
type TargetJson = PanelJson extends infer P ? (P extends { targets: infer X } ? ElementOf<X> : never) : never;
type OptionsJson = PanelJson extends infer P ? (P extends { options: infer X } ? X : never) : never;
type CustomJson = PanelJson extends infer P
  ? P extends { fieldConfig: { defaults: { custom: infer X } } }
    ? X
    : never
  : never;

/** Panel plugins the dashboard uses: each panel's options and custom field config must fit one of them. */
type PanelOptions = StatOptions | BarGaugeOptions | TableOptions | StateTimelineOptions | TimeSeriesOptions;
type PanelCustom = TableFieldConfig | StateTimelineFieldConfig | TimeSeriesFieldConfig;

export type Checks = [
  Assignable<Json, Widen<Dashboard>>,
  None<Excess<Json, Dashboard>>,
  Assignable<TargetJson, Widen<PrometheusQuery>>,
  None<Excess<TargetJson, PrometheusQuery, '$.panels[].targets[]'>>,
  Assignable<OptionsJson, Widen<PanelOptions>>,
  None<Excess<OptionsJson, PanelOptions, '$.panels[].options'>>,
  Assignable<CustomJson, Widen<PanelCustom>>,
  None<Excess<CustomJson, PanelCustom, '$.panels[].fieldConfig.defaults.custom'>>,
];
