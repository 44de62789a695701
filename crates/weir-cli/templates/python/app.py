"""{{name}}: a weir function. weir calls `handle` once per event of the pipeline's `from`
topics; each returned output is published to its target topic, which must be one of the
pipeline's `to`.

The WIT world weir:function/handler (wit/function.wit) from Python: componentize-py
generates the package `wit_world` (run `componentize-py -d wit -w weir:function/handler
bindings .` to see it); the export `handle` is the method `WitWorld.handle`. Raise
`Err(Error_Fatal(message))` for an event that can never succeed,
`Err(Error_Retryable(message))` for one that may succeed later. Imports are modules of
`wit_world.imports`, e.g. `wasi_config_store.get("key")`.
"""

from typing import List

import wit_world
from wit_world.imports.weir_function_types import Event, Output


class WitWorld(wit_world.WitWorld):
    def handle(self, event: Event) -> List[Output]:
        # Forward every event unchanged to the topic `out`.
        return [Output(target="out", event=event)]
