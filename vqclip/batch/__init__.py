"""Batches: many jobs from one file (a sweep and/or a list), run here, in worker processes or on Ray.

```python
import vqclip.batch

if __name__ == "__main__":  # workers=2 starts processes that import this script again
    for result in vqclip.batch.run({"defaults": {"preset": "shapes", "steps": 30},
                                    "grid": {"prompt": ["a red circle", "a blue square"], "seed": [1, 2]}},
                                   out="batch-out", workers=2):
        print(result.job.name, result.status, result.score, result.files)
```
"""

from . import generate_kind, prior_kind, seed_sweep, video_kind  # noqa: F401 - the built-in kinds register themselves
from .kinds import JobOutput, ModelCache, register_kind
from .runner import JobResult, run
from .spec import Job, jobs_from, parse_batch, read_batch_file

__all__ = ["Job", "JobOutput", "JobResult", "ModelCache", "jobs_from", "parse_batch", "read_batch_file",
           "register_kind", "run"]
