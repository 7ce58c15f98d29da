"""An `optuna.artifacts` store inside the study's own database: one table, `mincap_artifacts`.

Why: on a server storage (PostgreSQL, MySQL) the workers run on machines that share
nothing but the storage URL. A folder beside each study file would scatter a study's
networks over their disks, and a third machine could not export or verify them. In the
database, the study holds everything needed to rebuild its networks.

Why a table of its own and not a trial attribute (base64 in a system attribute would also
fit): Optuna loads every trial's attributes whenever a sampler, the live monitor or
optuna-dashboard reads the study, and the bytes (one to a few hundred kB per network) are
needed only by `mincap summary/export/verify`. Optuna's `upload_artifact` still records
each artifact's meta (id, file name) in its trial's system attributes, so Optuna's own
`download_artifact` works with this store. Optuna's schema checks look only at their own
tables, so the extra one does not get in their way.
"""

from __future__ import annotations

import io
import time
from typing import BinaryIO

import sqlalchemy as sa
from optuna.artifacts.exceptions import ArtifactNotFound
from sqlalchemy.dialects.mysql import LONGBLOB

__all__ = ["TABLE", "RDBArtifactStore"]

_META = sa.MetaData()
TABLE = sa.Table(
    "mincap_artifacts", _META,
    sa.Column("artifact_id", sa.String(64), primary_key=True),
    # MySQL's plain BLOB stops at 64 kB; a network may be larger.
    sa.Column("data", sa.LargeBinary().with_variant(LONGBLOB(), "mysql", "mariadb"), nullable=False),
)


class RDBArtifactStore:
    """Artifacts as rows (`artifact_id`, bytes) of `mincap_artifacts` in `engine`'s database."""

    def __init__(self, engine: sa.engine.Engine) -> None:
        self.engine = engine
        self._table_ready = False

    def _create_table(self) -> None:
        # Two machines starting at once race on CREATE TABLE; the loser finds it made.
        for attempt in range(4):
            try:
                _META.create_all(self.engine, checkfirst=True)
                self._table_ready = True
                return
            except sa.exc.SQLAlchemyError:
                if attempt == 3:
                    raise
                time.sleep(0.2 * (attempt + 1))

    def open_reader(self, artifact_id: str) -> BinaryIO:
        if not sa.inspect(self.engine).has_table(TABLE.name):
            raise ArtifactNotFound(f"no table {TABLE.name} in {self.engine.url.render_as_string()}")
        with self.engine.connect() as conn:
            data = conn.execute(sa.select(TABLE.c.data).where(TABLE.c.artifact_id == artifact_id)).scalar()
        if data is None:
            raise ArtifactNotFound(f"artifact {artifact_id} is not in {TABLE.name}")
        return io.BytesIO(bytes(data))

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        if not self._table_ready:
            self._create_table()
        with self.engine.begin() as conn:
            conn.execute(sa.insert(TABLE).values(artifact_id=artifact_id, data=content_body.read()))

    def remove(self, artifact_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.delete(TABLE).where(TABLE.c.artifact_id == artifact_id))
