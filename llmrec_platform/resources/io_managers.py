from __future__ import annotations

import dagster as dg
import pandas as pd
import pyarrow as pa
from pydantic import Field


class WarehouseIOManager(dg.ConfigurableIOManager):
    """Stores table assets (pandas or Arrow) as DuckDB tables (table name from the asset's `table` metadata), and
    loads them as what the input asks for: Arrow for a `pa.Table` input (no pandas, no Python object per value:
    the data path's raw_ratings -> interactions -> split), pandas otherwise.

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

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame | pa.Table) -> None:
        if not isinstance(obj, pd.DataFrame | pa.Table):
            raise TypeError(f"{context.asset_key.to_user_string()}: the warehouse stores DataFrames and Arrow tables, "
                            f"got {type(obj).__name__}")
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

    def load_input(self, context: dg.InputContext) -> pd.DataFrame | pa.Table:
        upstream = context.upstream_output
        table = self._table(upstream)
        store = self._warehouse()
        read = store.read_arrow if context.dagster_type.typing_type is pa.Table else store.read
        partition_expr = (upstream.definition_metadata or {}).get("partition_expr")
        if context.has_asset_partitions and partition_expr:
            window = context.asset_partitions_time_window
            return read(table, f"{partition_expr} >= ? AND {partition_expr} < ?",
                        [int(window.start.timestamp()), int(window.end.timestamp())])
        return read(table)
