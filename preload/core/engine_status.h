// What the engine reports about itself: tags by state, devices, memory it cannot sleep, peers.
#pragma once

#include "core/engine_types.h"

namespace gpusleep {

struct EngineParts;
class ProgramMemory;

// Engine::status (engine.h).
EngineStatus collect_status(EngineParts& parts, const ProgramMemory& program);

}  // namespace gpusleep
