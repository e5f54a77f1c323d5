"""The read side of a root: committed runs (`runs`), their inputs read once (`records`), lineage
(`lineage`), and the published table's versions, exports and run reports (`published`). No Prefect."""

from neuronatlas.catalog.published import export, lineage, runs, table, versions

__all__ = ["export", "lineage", "runs", "table", "versions"]
