import Scheduling

extension Simulator {
    /// Asks the migration planner whether moving a busy instance off a node holding the
    /// checkpoint locally starts `index` sooner than `plain`; when it does, begins the migration
    /// (the target loads, then recomputes the victim's sequences; the hand-over frees the node)
    /// and returns true.
    func startMigration(for index: Int, request: PlacementRequest, beating plain: PlacementDecision?) -> Bool {
        let model = instances[index].model
        let reference = cluster.calibration.referenceBytes
        var busy: [BusyInstance] = []
        for node in holders[model]
        where facts[node].freeMemoryBytes + facts[node].idleMemoryBytes < request.memoryBytes
            && (facts[node].tier == .dram || facts[node].tier == .ssd)
        {
            for victim in nodes[node].instances
            where instances[victim].phase == .ready && !instances[victim].jobs.isEmpty {
                let other = instances[victim].model
                guard other != model, instances[victim].migration == nil,
                    machines[other].instances[instances[victim].id]?.state == .ready
                else { continue }
                let bytes = cluster.modelBytes[other]
                // One prefill rate serves every victim: tokens count at their model's size.
                let tokens = instances[victim].jobs.reduce(0) { $0 + tokensHeld(by: $1) }
                var tiers: [String: CheckpointTier] = [:]
                for holder in holders[other] { tiers[nodes[holder].name] = nodes[holder].tier(of: other) }
                busy.append(
                    BusyInstance(
                        id: instances[victim].id, node: nodes[node].name, memoryBytes: instances[victim].bytes,
                        checkpointBytes: bytes, tokens: Int((Double(tokens) * Double(bytes) / reference).rounded(.up)),
                        tiers: tiers))
            }
        }
        guard !busy.isEmpty,
            let plan = MigrationPlanner.plan(
                request, nodes: facts, busy: busy, beating: plain?.estimatedStartSeconds, prefillTokensPerSecond: [:],
                assumedPrefill: cluster.calibration.prefillTokensPerSecond, assumedBandwidth: bandwidth),
            let victim = instanceIndex[plan.victim], let from = nodeIndex[plan.from], let to = nodeIndex[plan.to]
        else { return false }
        let other = instances[victim].model
        guard let targetID = machines[other].beginMigration(from: plan.victim) else { return false }
        let target = instances.count
        instances.append(SimulatedInstance(id: targetID, model: other, bytes: instances[victim].bytes))
        instanceIndex[targetID] = target
        guard admit(target, on: to) else {
            instanceIndex[targetID] = nil
            instances[target].phase = .stopped
            apply(machines[other].endMigration(from: plan.victim, to: targetID, succeeded: false), model: other)
            apply(machines[other].instanceFailed(targetID, reason: "no room on \(plan.to)"), model: other)
            return false
        }
        instances[target].migration = migrations.count
        migrations.append(
            Migration(victim: victim, target: target, waiting: index, from: from, started: now, tokens: 0))
        counters.migrationsStarted += 1
        load(target, on: to)
        return true
    }

    /// Stage 2: the victim's remaining sequences continue on the target, the victim stops, and
    /// the instance that waited starts on the node it left (elsewhere if another took the room).
    func handOver(_ migration: Int) {
        let record = migrations[migration]
        let victim = record.victim
        let target = record.target
        let model = instances[victim].model
        let moving = instances[victim].jobs
        let source = instances[victim].node
        let destination = instances[target].node
        for request in moving {
            requestInstance[request] = target
            instances[target].jobs.append(request)
            apply(machines[model].jobMoved(from: instances[victim].id, to: instances[target].id), model: model)
        }
        instances[victim].jobs.removeAll()
        nodes[source].runningJobs -= moving.count
        nodes[destination].runningJobs += moving.count
        nodes[source].idleVersion += 1
        nodes[destination].idleVersion += 1
        instances[target].phase = .ready
        instances[target].readyAt = now
        instances[target].lastUsed = now
        instances[target].migration = nil
        counters.migrations += 1
        counters.migratedRequests += moving.count
        counters.migrationSeconds.append(now - record.started)
        apply(
            machines[model].endMigration(from: instances[victim].id, to: instances[target].id, succeeded: true),
            model: model)
        let waiting = record.waiting
        if admit(waiting, on: record.from) {
            load(waiting, on: record.from)
        } else {
            start(waiting, mayMigrate: false)
        }
    }
}
