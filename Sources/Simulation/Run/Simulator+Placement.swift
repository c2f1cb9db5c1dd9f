import Scheduling

extension Simulator {
    /// Places and starts an instance: the policy chooses from every node's facts (or the
    /// migration planner finds a start sooner through a migration), admission makes room, and
    /// the load queues on the node.
    /// When every node's memory is held by busy instances, the start waits for room (woken when
    /// an instance goes idle or stops, for up to `roomWait`), as the deployment's start does.
    func start(_ index: Int, mayMigrate: Bool, retry: Bool = false) {
        let model = instances[index].model
        let request = PlacementRequest(
            model: names[model], checkpointBytes: cluster.modelBytes[model], memoryBytes: instances[index].bytes)
        gatherFacts(for: model, besides: names[model], bytes: request.memoryBytes)
        let plain = placement.place(request, on: facts)
        if mayMigrate, startMigration(for: index, request: request, beating: plain) { return }
        guard let decision = plain, let node = nodeIndex[decision.node], admit(index, on: node) else {
            if request.memoryBytes <= cluster.memoryBytes {
                if !retry { events.schedule(.roomTimeout(instance: index), at: now + Self.roomWait) }
                awaitingRoom.append(index)
                counters.roomWaits += retry ? 0 : 1
                return
            }
            apply(
                machines[model].instanceFailed(instances[index].id, reason: "no node has room"), model: model)
            return
        }
        load(index, on: node)
    }

    /// Fills `facts` as the node pool does: free and idle memory, the fastest tier holding the
    /// checkpoint (a peer when another node holds it), queued loads, running requests, and what
    /// making room costs where the instance does not fit.
    func gatherFacts(for model: Int, besides deployment: String, bytes: Int) {
        let held = policy == .kserve ? CheckpointTier.remote : holders[model].isEmpty ? .remote : .peer
        for node in nodes.indices {
            let free = nodes[node].budget - nodes[node].reserved
            var idle = 0
            var room = 0.0
            if nodes[node].orderVersion != nodes[node].idleVersion { _ = evictionOrder(on: node) }
            if nodes[node].idleBytes > 0 {
                idle = nodes[node].idleBytes
                // A deployment starting an instance rarely has an idle one; it is not counted.
                if nodes[node].idleModels.contains(model) {
                    for candidate in nodes[node].order where candidate.deployment == deployment {
                        idle -= candidate.bytes
                    }
                }
            }
            if bytes > free, idle > 0 {
                room =
                    MemoryAdmission.roomSeconds(
                        bytes: bytes, for: deployment, budget: nodes[node].budget, used: nodes[node].reserved,
                        ordered: evictionOrder(on: node)) ?? 0
            }
            facts[node].freeMemoryBytes = free
            facts[node].idleMemoryBytes = idle
            facts[node].tier = held
            facts[node].queuedSeconds = nodes[node].queuedSeconds
            facts[node].runningJobs = nodes[node].runningJobs
            facts[node].roomSeconds = room
        }
        if policy != .kserve {
            for node in holders[model] { facts[node].tier = nodes[node].tier(of: model) ?? held }
        }
    }

    /// The node's idle instances in the order admission stops them, recomputed only when an
    /// instance there changed.
    func evictionOrder(on node: Int) -> [MemoryAdmission.Candidate] {
        if nodes[node].orderVersion == nodes[node].idleVersion { return nodes[node].order }
        var candidates: [MemoryAdmission.Candidate] = []
        for index in nodes[node].instances
        where instances[index].phase == .ready && instances[index].jobs.isEmpty {
            let model = instances[index].model
            candidates.append(
                MemoryAdmission.Candidate(
                    instance: instances[index].id, deployment: names[model], bytes: instances[index].bytes,
                    lastUsed: instances[index].lastUsed, model: names[model],
                    reloadSeconds: Double(cluster.modelBytes[model]) / rate(of: tier(of: model, on: node))))
        }
        nodes[node].order = MemoryAdmission.evictionOrder(candidates)
        nodes[node].orderVersion = nodes[node].idleVersion
        nodes[node].idleBytes = candidates.reduce(0) { $0 + $1.bytes }
        nodes[node].idleModels = nodes[node].instances.filter {
            instances[$0].phase == .ready && instances[$0].jobs.isEmpty
        }.map { instances[$0].model }
        return nodes[node].order
    }

    /// The tier a load of `model` on `node` reads from now.
    func tier(of model: Int, on node: Int) -> CheckpointTier {
        if policy == .kserve { return .remote }
        return nodes[node].tier(of: model) ?? (holders[model].isEmpty ? .remote : .peer)
    }

    func rate(of tier: CheckpointTier) -> Double { bandwidth[tier] ?? cluster.remoteBytesPerSecond }

    /// Makes room for the instance on `node` as admission decides (stopping idle instances of
    /// other deployments) and reserves its memory there; false when the node cannot hold it.
    func admit(_ index: Int, on node: Int) -> Bool {
        let model = instances[index].model
        let bytes = instances[index].bytes
        switch MemoryAdmission.decide(
            bytes: bytes, for: names[model], budget: nodes[node].budget, used: nodes[node].reserved,
            ordered: evictionOrder(on: node))
        {
        case .admit:
            break
        case .evict(let victims):
            for victim in victims {
                guard let other = instanceIndex[victim.instance] else { continue }
                let owner = instances[other].model
                if machines[owner].evict(victim.instance) {
                    counters.evictions += 1
                    stop(other)
                }
            }
        case .refuse:
            return false
        }
        guard nodes[node].budget - nodes[node].reserved >= bytes else { return false }
        nodes[node].reserved += bytes
        nodes[node].instances.append(index)
        nodes[node].idleVersion += 1
        instances[index].node = node
        return true
    }

    /// Queues the instance's load on its node; a fetch from the remote store starts at once.
    func load(_ index: Int, on node: Int) {
        let model = instances[index].model
        let source = tier(of: model, on: node)
        let estimate = Double(cluster.modelBytes[model]) / rate(of: source) + cluster.calibration.startSeconds
        nodes[node].queuedSeconds += estimate
        let job = LoadJob(instance: index, estimate: estimate)
        if source == .remote {
            fetch(job, on: node)
            return
        }
        nodes[node].queue.append(job)
        if nodes[node].loading == nil { startNextLoad(on: node) }
    }

    private func startNextLoad(on node: Int) {
        while nodes[node].queueHead < nodes[node].queue.count {
            let job = nodes[node].queue[nodes[node].queueHead]
            nodes[node].queueHead += 1
            let model = instances[job.instance].model
            let source = tier(of: model, on: node)
            // Queued while a copy was near; gone since: a fetch beside the node's own loads.
            guard source != .remote else {
                fetch(job, on: node)
                continue
            }
            nodes[node].loading = job
            instances[job.instance].source = source
            let bytes = cluster.modelBytes[model]
            counters.loads[source, default: 0] += 1
            counters.loadedBytes[source, default: 0] += bytes
            nodes[node].dram.touch(model, now: now)
            events.schedule(
                .loaded(node: node), at: now + Double(bytes) / rate(of: source) + cluster.calibration.startSeconds)
            return
        }
        nodes[node].queue.removeAll(keepingCapacity: true)
        nodes[node].queueHead = 0
    }

    /// Starts a fetch from the remote store: it shares the store's link with every other fetch.
    private func fetch(_ job: LoadJob, on node: Int) {
        let bytes = cluster.modelBytes[instances[job.instance].model]
        counters.loads[.remote, default: 0] += 1
        counters.loadedBytes[.remote, default: 0] += bytes
        instances[job.instance].source = .remote
        nodes[node].fetching[job.instance] = job.estimate
        if let next = remote.add(id: job.instance, bytes: bytes, now: now) {
            events.schedule(.remoteProgress(version: remote.version), at: next)
        }
    }

    /// The load running on `node` ended; the next one begins.
    func loaded(on node: Int) {
        guard let job = nodes[node].loading else { return }
        nodes[node].loading = nil
        finish(job, on: node)
        startNextLoad(on: node)
    }

    /// A fetch from the remote store ended.
    func fetched(_ index: Int) {
        let node = instances[index].node
        guard nodes.indices.contains(node), let estimate = nodes[node].fetching.removeValue(forKey: index) else {
            return
        }
        finish(LoadJob(instance: index, estimate: estimate), on: node)
    }

    /// A load ended: the checkpoint is cached on the node, the instance is ready (or, for a
    /// migration's target, recomputes the moved sequences).
    private func finish(_ job: LoadJob, on node: Int) {
        nodes[node].queuedSeconds = max(0, nodes[node].queuedSeconds - job.estimate)
        let index = job.instance
        let model = instances[index].model
        if policy != .kserve { cache(model, on: node, dram: true) }
        if let migration = instances[index].migration {
            // Stage 1: the target computes the victim's sequences (the tokens they hold by now).
            let tokens = instances[migrations[migration].victim].jobs.reduce(0) { $0 + tokensHeld(by: $1) }
            migrations[migration].tokens = tokens
            events.schedule(
                .handover(migration: migration),
                at: now + Double(tokens) / cluster.calibration.prefill(bytes: cluster.modelBytes[model]))
        } else if instances[index].phase == .starting {
            instances[index].phase = .ready
            instances[index].readyAt = now
            instances[index].lastUsed = now
            nodes[node].idleVersion += 1
            apply(machines[model].instanceStarted(instances[index].id), model: model)
        }
    }

    /// Keeps `model`'s checkpoint on `node`: on its SSD, and in its DRAM cache when `dram`.
    func cache(_ model: Int, on node: Int, dram: Bool) {
        let bytes = cluster.modelBytes[model]
        let before = nodes[node].tier(of: model) != nil
        var dropped = nodes[node].ssd.insert(model, bytes: bytes, now: now)
        if dram {
            // The instances running here map their checkpoints: those stay.
            let pinned = Set(nodes[node].instances.map { instances[$0].model })
            dropped += nodes[node].dram.insert(model, bytes: bytes, now: now, pinned: pinned)
        }
        for other in dropped where other != model && nodes[node].tier(of: other) == nil {
            holders[other].removeAll { $0 == node }
        }
        if !before, nodes[node].tier(of: model) != nil { holders[model].append(node) }
        nodes[node].idleVersion += 1  // reload costs changed
    }
}
