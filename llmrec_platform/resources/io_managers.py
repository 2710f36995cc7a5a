from __future__ import annotations

import dagster as dg
import pandas as pd
from pydantic import Field


class WarehouseIOManager(dg.ConfigurableIOManager):
    """Stores DataFrame assets as DuckDB tables (table name from the asset's `table` metadata).

    Time-partitioned assets declare `partition_expr` (an epoch-seconds column): a run deletes its
    window and inserts its rows, so re-running a partition never duplicates. This is the seam where a
    server-class warehouse's IO manager (dagster-snowflake-pandas, dagster-gcp-pandas) plugs in.
    """

    path: str = Field(description="the DuckDB file, e.g. <home>/warehouse.duckdb")

    def _warehouse(self):
        from llmrec_platform.storage.warehouse import Warehouse

        return Warehouse(self.path)

    @staticmethod
    def _table(context) -> str:
        metadata = context.definition_metadata or {}
        return metadata.get("table") or context.asset_key.path[-1]

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame) -> None:
        if not isinstance(obj, pd.DataFrame):
            raise TypeError(f"{context.asset_key.to_user_string()}: the warehouse stores DataFrames, got {type(obj).__name__}")
        table = self._table(context)
        partition_expr = (context.definition_metadata or {}).get("partition_expr")
        if context.has_asset_partitions and partition_expr:
            window = context.asset_partitions_time_window
            self._warehouse().replace_where(
                table, obj, f"{partition_expr} >= ? AND {partition_expr} < ?",
                [int(window.start.timestamp()), int(window.end.timestamp())],
            )
        else:
            self._warehouse().replace(table, obj)
        context.add_output_metadata({"table": table, "rows": len(obj)})

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        upstream = context.upstream_output
        table = self._table(upstream)
        partition_expr = (upstream.definition_metadata or {}).get("partition_expr")
        if context.has_asset_partitions and partition_expr:
            window = context.asset_partitions_time_window
            return self._warehouse().read(
                table, f"{partition_expr} >= ? AND {partition_expr} < ?",
                [int(window.start.timestamp()), int(window.end.timestamp())],
            )
        return self._warehouse().read(table)
