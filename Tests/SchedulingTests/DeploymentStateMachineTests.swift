import Testing

@testable import Scheduling

@Suite struct DeploymentStateMachineTests {
    typealias Action = DeploymentStateMachine.Action

    func machine(_ configure: (inout ScalingSettings) -> Void = { _ in }) -> DeploymentStateMachine {
        var settings = ScalingSettings()
        configure(&settings)
        var next = 0
        return DeploymentStateMachine(settings: settings) {
            next += 1
            return "i\(next)"
        }
    }

    @Test func firstRequestStartsOneInstanceAndLaterOnesCoalesceOnIt() {
        var m = machine { $0.targetConcurrency = 4 }
        #expect(m.requestArrived(1) == [.start("i1")])
        #expect(m.requestArrived(2) == [])
        #expect(m.requestArrived(3) == [])
        #expect(m.instanceStarted("i1") == [.dispatch(1, "i1"), .dispatch(2, "i1"), .dispatch(3, "i1")])
        #expect(m.inFlight == 3)
    }

    @Test func scalesUpWhenDemandExceedsTargetTimesInstancesButNotPastMax() {
        var m = machine {
            $0.targetConcurrency = 1
            $0.maxInstances = 2
        }
        #expect(m.requestArrived(1) == [.start("i1")])
        #expect(m.requestArrived(2) == [.start("i2")])
        #expect(m.requestArrived(3) == [])
        #expect(m.count(.starting) == 2)
        #expect(m.instanceStarted("i1") == [.dispatch(1, "i1")])
        #expect(m.instanceStarted("i2") == [.dispatch(2, "i2")])
        // Request 3 waits for a slot; it gets the first one freed.
        #expect(m.requestFinished(on: "i2", keepAlive: nil) == [.dispatch(3, "i2")])
    }

    @Test func aFullQueueRejects() {
        var m = machine {
            $0.targetConcurrency = 1
            $0.queueLimit = 1
        }
        _ = m.requestArrived(1)
        _ = m.instanceStarted("i1")
        #expect(m.requestArrived(2) == [])
        #expect(m.requestArrived(3) == [.reject(3, .queueFull(limit: 1))])
        #expect(m.queueDepth == 1)
    }

    @Test func queueLimitZeroStillAdmitsTheColdStartItTriggers() {
        var m = machine {
            $0.targetConcurrency = 1
            $0.queueLimit = 0
        }
        #expect(m.requestArrived(1) == [.start("i1")])
        #expect(m.requestArrived(2) == [.reject(2, .queueFull(limit: 0))])
    }

    @Test func idleInstanceStopsWhenItsKeepAliveTimerFires() {
        var m = machine { $0.keepAlive = .duration(.seconds(60)) }
        _ = m.requestArrived(1)
        _ = m.instanceStarted("i1")
        let idle = m.requestFinished(on: "i1", keepAlive: nil)
        guard case .scheduleTimer("i1", let token, .seconds(60))? = idle.first else {
            Issue.record("expected a keep-alive timer, got \(idle)")
            return
        }
        #expect(m.timerFired("i1", token: token) == [.stop("i1")])
        #expect(m.instanceStopped("i1") == [])
        #expect(m.instances.isEmpty)
    }

    @Test func aRequestDuringKeepAliveMakesTheOldTimerStale() {
        var m = machine { $0.keepAlive = .duration(.seconds(60)) }
        _ = m.requestArrived(1)
        _ = m.instanceStarted("i1")
        guard case .scheduleTimer(_, let stale, _)? = m.requestFinished(on: "i1", keepAlive: nil).first else {
            return #expect(Bool(false))
        }
        #expect(m.requestArrived(2) == [.dispatch(2, "i1")])
        #expect(m.timerFired("i1", token: stale) == [])
        guard case .scheduleTimer(_, let fresh, _)? = m.requestFinished(on: "i1", keepAlive: nil).first else {
            return #expect(Bool(false))
        }
        #expect(fresh != stale)
        #expect(m.timerFired("i1", token: fresh) == [.stop("i1")])
    }

    @Test func minimumInstancesAreStartedAndNeverScaledAway() {
        var m = machine {
            $0.minInstances = 1
            $0.keepAlive = .zero
        }
        #expect(m.ensureMinimum() == [.start("i1")])
        #expect(m.instanceStarted("i1") == [])
        #expect(m.requestArrived(1) == [.dispatch(1, "i1")])
        #expect(m.requestFinished(on: "i1", keepAlive: nil) == [])
        #expect(m.count(.ready) == 1)
    }

    /// Deleting a deployment with `min_instances` stops its instances and starts none in their place.
    @Test func aDeletedDeploymentStartsNothingWhenItsInstancesStop() {
        var m = machine {
            $0.minInstances = 2; $0.maxInstances = 2
        }
        #expect(m.ensureMinimum() == [.start("i1"), .start("i2")])
        _ = m.instanceStarted("i1")
        let deletion = m.deleteAll()
        #expect(deletion == .init(rejected: [], stopped: ["i1", "i2"]))
        #expect(m.instanceStopped("i1") == [])
        #expect(m.instanceStopped("i2") == [])
        #expect(m.ensureMinimum() == [])
        #expect(m.instances.isEmpty)
    }

    @Test func perRequestKeepAliveOverridesTheDeployment() {
        var m = machine { $0.keepAlive = .duration(.seconds(300)) }
        _ = m.requestArrived(1)
        _ = m.instanceStarted("i1")
        // Ollama's keep_alive 0: unload as soon as the request ends.
        #expect(m.requestFinished(on: "i1", keepAlive: .zero) == [.stop("i1")])

        var forever = machine { $0.keepAlive = .duration(.seconds(1)) }
        _ = forever.requestArrived(1)
        _ = forever.instanceStarted("i1")
        #expect(forever.requestFinished(on: "i1", keepAlive: .forever) == [])
    }

    @Test func aFailedStartFailsTheRequestsWaitingForIt() {
        var m = machine()
        _ = m.requestArrived(1)
        _ = m.requestArrived(2)
        #expect(
            m.instanceFailed("i1", reason: "no memory") == [
                .reject(1, .startFailed("no memory")), .reject(2, .startFailed("no memory")),
            ])
        #expect(m.instances.isEmpty)
    }

    @Test func aCancelledWaiterLeavesTheQueue() {
        var m = machine()
        _ = m.requestArrived(1)
        _ = m.requestArrived(2)
        m.waiterCancelled(1)
        #expect(m.instanceStarted("i1") == [.dispatch(2, "i1")])
    }

    @Test func updatesApplyAtOnce() {
        var m = machine { $0.maxInstances = 3 }
        #expect(
            m.update(
                with {
                    $0.minInstances = 2; $0.maxInstances = 3
                }) == [.start("i1"), .start("i2")])
        _ = m.instanceStarted("i1")
        _ = m.instanceStarted("i2")
        let lowered = m.update(
            with {
                $0.minInstances = 0; $0.maxInstances = 1; $0.keepAlive = .forever
            })
        #expect(lowered.filter { if case .stop = $0 { true } else { false } }.count == 1)
        #expect(m.count(.ready) == 1)
    }

    @Test func deletingRejectsWaitersAndStopsEverything() {
        var m = machine()
        _ = m.requestArrived(1)
        let deletion = m.deleteAll()
        #expect(deletion == .init(rejected: [1], stopped: ["i1"]))
        let late = m.requestArrived(2)
        #expect(late == [.reject(2, .deleted)], "nothing starts for a deleted deployment")
    }

    @Test func evictionStopsIdleInstancesOnly() {
        var m = machine {
            $0.targetConcurrency = 1
            $0.maxInstances = 2
            $0.keepAlive = .forever
        }
        _ = m.requestArrived(1)
        _ = m.requestArrived(2)
        _ = m.instanceStarted("i1")
        _ = m.instanceStarted("i2")
        _ = m.requestFinished(on: "i2", keepAlive: nil)
        #expect(m.idleInstances == ["i2"])
        let busy = m.evict("i1")
        let idle = m.evict("i2")
        let again = m.evict("i2")
        #expect(!busy && idle)
        #expect(!again, "already stopping")
    }

    @Test func anOperatorStopsOneInstanceNowOrOnceItsRequestsEnd() {
        var m = machine {
            $0.targetConcurrency = 1
            $0.maxInstances = 2
            $0.minInstances = 1
            $0.keepAlive = .forever
        }
        #expect(m.ensureMinimum() == [.start("i1")])
        _ = m.instanceStarted("i1")
        // Idle, even at the minimum: it stops now, and the minimum starts another once it has.
        #expect(m.stop("i1") == [.stop("i1")])
        #expect(m.stop("i1") == nil, "already stopping")
        #expect(m.instanceStopped("i1") == [.start("i2")])
        #expect(m.stop("i2") == nil, "still starting")
        #expect(m.stop("nothing") == nil)
        _ = m.instanceStarted("i2")

        // Busy: it takes no new request and no longer counts towards the minimum (another starts
        // at once); one arriving meanwhile waits for that one, and the stopped one goes once its
        // request ends.
        #expect(m.requestArrived(1) == [.dispatch(1, "i2")])
        #expect(m.stop("i2") == [.start("i3")])
        #expect(m.requestArrived(2) == [])
        #expect(m.instanceStarted("i3") == [.dispatch(2, "i3")])
        #expect(m.requestFinished(on: "i2", keepAlive: nil) == [.stop("i2")])
        #expect(m.instances["i2"]?.state == .stopping)
    }

    private func with(_ configure: (inout ScalingSettings) -> Void) -> ScalingSettings {
        var settings = ScalingSettings()
        configure(&settings)
        return settings
    }
}

extension KeepAlive {
    static let zero = KeepAlive.duration(.zero)
}

@Suite struct KeepAliveTests {
    @Test func parsesOllamasForms() throws {
        #expect(try KeepAlive(parsing: "5m") == .duration(.seconds(300)))
        #expect(try KeepAlive(parsing: "1h30m") == .duration(.seconds(5400)))
        #expect(try KeepAlive(parsing: "250ms") == .duration(.milliseconds(250)))
        #expect(try KeepAlive(parsing: "0") == .duration(.zero))
        #expect(try KeepAlive(parsing: "-1") == .forever)
        #expect(try KeepAlive(parsing: "-5m") == .forever)
        #expect(try KeepAlive(parsing: "forever") == .forever)
        #expect(try KeepAlive(parsing: "90") == .duration(.seconds(90)))
        #expect(throws: SchedulingError.self) { try KeepAlive(parsing: "soon") }
        #expect(throws: SchedulingError.self) { try KeepAlive(parsing: "nanm") }
        #expect(try KeepAlive(parsing: " 5m ") == .duration(.seconds(300)))
        #expect(
            KeepAlive.duration(.milliseconds(1500)).description == "1.5s"
                && KeepAlive.duration(.milliseconds(250)).description == "250ms")
        #expect(KeepAlive.duration(.seconds(5400)).description == "1h30m")
        #expect(KeepAlive.forever.description == "forever")
    }
}

@Suite struct MemoryAdmissionTests {
    typealias Candidate = MemoryAdmission.Candidate

    let idle = [
        Candidate(instance: "a-1", deployment: "a", bytes: 300, lastUsed: 20),
        Candidate(instance: "b-1", deployment: "b", bytes: 200, lastUsed: 10),
        Candidate(instance: "c-1", deployment: "c", bytes: 500, lastUsed: 30),
    ]

    @Test func whatFitsIsAdmitted() {
        #expect(MemoryAdmission.decide(bytes: 400, for: "d", budget: 1000, used: 600, idle: idle) == .admit)
    }

    /// Least recently used first, only as many as needed, never the deployment's own.
    @Test func evictsLeastRecentlyUsedOthersUntilItFits() {
        #expect(
            MemoryAdmission.decide(bytes: 500, for: "d", budget: 1000, used: 1000, idle: idle)
                == .evict([idle[1], idle[0]]))
        #expect(MemoryAdmission.decide(bytes: 100, for: "d", budget: 1000, used: 1000, idle: idle) == .evict([idle[1]]))
        #expect(
            MemoryAdmission.decide(bytes: 500, for: "b", budget: 1000, used: 1000, idle: idle)
                == .evict([idle[0], idle[2]]))
    }

    /// An instance cheap to start again goes before a dearer one used a little earlier: each
    /// second of reload counts as `reloadWorth` seconds of more recent use.
    @Test func cheapReloadsGoFirst() {
        let dear = MemoryAdmission.Candidate(
            instance: "dear", deployment: "x", bytes: 400, lastUsed: 100, model: "x", reloadSeconds: 2)
        let cheap = MemoryAdmission.Candidate(
            instance: "cheap", deployment: "y", bytes: 400, lastUsed: 130, model: "y", reloadSeconds: 0.05)
        #expect(
            MemoryAdmission.decide(bytes: 300, for: "d", budget: 1000, used: 1000, idle: [dear, cheap])
                == .evict([cheap]))
        // Used long enough before, the dear one goes first all the same.
        var old = dear
        old.lastUsed = 0
        #expect(
            MemoryAdmission.decide(bytes: 300, for: "d", budget: 1000, used: 1000, idle: [old, cheap]) == .evict([old]))
    }

    /// What cannot fit stops nothing and says by how much.
    @Test func whatCannotFitIsRefusedWithTheFigures() {
        #expect(
            MemoryAdmission.decide(bytes: 1200, for: "d", budget: 1000, used: 1000, idle: idle)
                == .refuse(needed: 1200, free: 0, budget: 1000, evictable: 1000))
        #expect(
            MemoryAdmission.decide(bytes: 2000, for: "d", budget: 1000, used: 0, idle: [])
                == .refuse(needed: 2000, free: 1000, budget: 1000, evictable: 0))
    }

    /// The reload cost a scheduler charges for making room is that of the instances `decide`
    /// stops, for any idle set and size.
    @Test func roomSecondsPricesWhatDecideStops() {
        var state: UInt64 = 7
        func next(_ bound: Int) -> Int {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int((state >> 33) % UInt64(bound))
        }
        for _ in 0..<500 {
            let idle = (0..<next(6)).map { index in
                Candidate(
                    instance: "i\(index)", deployment: ["d", "e", "f"][next(3)], bytes: 100 * (1 + next(5)),
                    lastUsed: Double(next(100)), reloadSeconds: Double(next(10)) / 10)
            }
            let (bytes, used) = (100 * (1 + next(8)), 100 * next(11))
            let ordered = MemoryAdmission.evictionOrder(idle)
            let seconds = MemoryAdmission.roomSeconds(
                bytes: bytes, for: "d", budget: 1000, used: used, ordered: ordered)
            switch MemoryAdmission.decide(bytes: bytes, for: "d", budget: 1000, used: used, idle: idle) {
            case .admit: #expect(seconds == 0)
            case .evict(let victims): #expect(seconds == victims.reduce(0) { $0 + $1.reloadSeconds })
            case .refuse: #expect(seconds == nil)
            }
        }
    }
}

@Suite struct ManualClockTests {
    /// Sleepers wake when their deadline is reached, in order, and not before.
    @Test func sleepersWakeWhenTimeReachesThem() async throws {
        let clock = ManualClock()
        let woke = AsyncStream<Int>.makeStream()
        for (label, seconds) in [(2, 20), (1, 10)] {
            Task {
                try await clock.sleep(for: .seconds(seconds))
                woke.continuation.yield(label)
            }
        }
        while clock.sleeperCount < 2 { await Task.yield() }
        clock.advance(by: .seconds(9))
        #expect(clock.sleeperCount == 2)
        clock.advance(by: .seconds(1))
        var order = woke.stream.makeAsyncIterator()
        #expect(await order.next() == 1)
        #expect(clock.sleeperCount == 1)
        clock.advance(by: .seconds(10))
        #expect(await order.next() == 2)
        #expect(clock.now == .seconds(20))
    }

    /// A cancelled sleeper throws at once and leaves nothing behind.
    @Test func cancellingASleeperEndsIt() async throws {
        let clock = ManualClock()
        let task = Task { try await clock.sleep(for: .seconds(60)) }
        while clock.sleeperCount < 1 { await Task.yield() }
        task.cancel()
        await #expect(throws: CancellationError.self) { try await task.value }
        #expect(clock.sleeperCount == 0)
        // Already cancelled before sleeping: throws without registering.
        let early = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            try await clock.sleep(for: .seconds(1))
        }
        await #expect(throws: CancellationError.self) { try await early.value }
    }
}

@Suite struct PlacementTests {
    let request = PlacementRequest(model: "m", checkpointBytes: 4_000_000_000, memoryBytes: 5_000_000_000)
    let bandwidth: [CheckpointTier: Double] = [.dram: 20e9, .ssd: 2e9, .remote: 0.5e9]

    /// The checkpoint in DRAM wins over SSD, SSD over a fetch, each by its measured bandwidth.
    @Test func theFastestTierWins() {
        let nodes = [
            NodeFacts(node: "a", freeMemoryBytes: 8 << 30, tier: .remote, bandwidth: bandwidth),
            NodeFacts(node: "b", freeMemoryBytes: 8 << 30, tier: .ssd, bandwidth: bandwidth),
            NodeFacts(node: "c", freeMemoryBytes: 8 << 30, tier: .dram, bandwidth: bandwidth),
        ]
        #expect(
            LocalityPlacement().place(request, on: nodes)
                == PlacementDecision(node: "c", tier: .dram, estimatedStartSeconds: 0.2))
        #expect(
            LocalityPlacement().place(request, on: Array(nodes.prefix(2)))
                == PlacementDecision(node: "b", tier: .ssd, estimatedStartSeconds: 2))
    }

    /// A queue ahead of the load counts: a busy node with the model in DRAM loses to an idle one
    /// reading its SSD once the queue is longer than the difference.
    @Test func queuedLoadsCount() {
        let busy = NodeFacts(
            node: "busy", freeMemoryBytes: 8 << 30, tier: .dram, bandwidth: bandwidth, queuedSeconds: 3)
        let idle = NodeFacts(node: "idle", freeMemoryBytes: 8 << 30, tier: .ssd, bandwidth: bandwidth)
        #expect(LocalityPlacement().place(request, on: [busy, idle])?.node == "idle")
        var shortQueue = busy
        shortQueue.queuedSeconds = 1
        #expect(LocalityPlacement().place(request, on: [shortQueue, idle])?.node == "busy")
    }

    /// Nodes without the memory, or without a bandwidth for the tier, are not candidates.
    @Test func nodesThatCannotTakeItAreSkipped() {
        let small = NodeFacts(node: "small", freeMemoryBytes: 1 << 30, tier: .dram, bandwidth: bandwidth)
        let unmeasured = NodeFacts(node: "new", freeMemoryBytes: 8 << 30, tier: .ssd, bandwidth: [:])
        #expect(LocalityPlacement().place(request, on: [small, unmeasured]) == nil)
        #expect(LocalityPlacement().place(request, on: []) == nil)
        // Equal estimates: the faster tier, then the node id.
        let twins = ["y", "x"].map { NodeFacts(node: $0, freeMemoryBytes: 8 << 30, tier: .ssd, bandwidth: bandwidth) }
        #expect(LocalityPlacement().place(request, on: twins)?.node == "x")
    }

    /// Memory idle instances hold counts as room (admission may stop them); a tier the node has
    /// not measured is estimated at the assumed rate, and a measured rate beats the assumption.
    @Test func idleMemoryAndAssumedBandwidth() {
        let crowded = NodeFacts(
            node: "crowded", freeMemoryBytes: 1 << 30, idleMemoryBytes: 6 << 30, tier: .dram, bandwidth: bandwidth)
        #expect(LocalityPlacement().place(request, on: [crowded])?.node == "crowded")
        var full = crowded
        full.idleMemoryBytes = 1 << 30
        #expect(LocalityPlacement().place(request, on: [full]) == nil)

        let fresh = NodeFacts(node: "fresh", freeMemoryBytes: 8 << 30, tier: .dram, bandwidth: [:])
        let measured = NodeFacts(node: "measured", freeMemoryBytes: 8 << 30, tier: .ssd, bandwidth: [.ssd: 4e9])
        let placement = LocalityPlacement(assumedBandwidth: [.dram: 8e9, .ssd: 1e9])
        #expect(
            placement.place(request, on: [fresh, measured])
                == PlacementDecision(node: "fresh", tier: .dram, estimatedStartSeconds: 0.5))
        var slowDRAM = fresh
        slowDRAM.bandwidth = [.dram: 2e9]
        #expect(placement.place(request, on: [slowDRAM, measured])?.node == "measured")
    }

    /// Making room is charged: a node whose idle instances would have to stop (and load again
    /// later) loses to one with free memory once that reload costs more than the tiers differ.
    @Test func makingRoomIsCharged() {
        let crowded = NodeFacts(
            node: "crowded", freeMemoryBytes: 1 << 30, idleMemoryBytes: 6 << 30, tier: .dram, bandwidth: bandwidth,
            roomSeconds: 0.1)
        let roomy = NodeFacts(node: "roomy", freeMemoryBytes: 8 << 30, tier: .ssd, bandwidth: bandwidth)
        // DRAM 0.2 s + 0.1 s of room beats the SSD's 2 s.
        #expect(
            LocalityPlacement().place(request, on: [crowded, roomy])
                == PlacementDecision(node: "crowded", tier: .dram, estimatedStartSeconds: 0.30000000000000004))
        var costly = crowded
        costly.roomSeconds = 3
        #expect(LocalityPlacement().place(request, on: [costly, roomy])?.node == "roomy")
        // Alone, it is still chosen, with the cost in its estimate.
        #expect(LocalityPlacement().place(request, on: [costly])?.estimatedStartSeconds == 3.2)
    }

    /// A checkpoint another node holds is fetched over the link: slower than the node's own SSD,
    /// faster than the remote store, at the assumed peer rate until measured.
    @Test func aPeerSitsBetweenTheSSDAndTheRemoteStore() {
        let nodes = [
            NodeFacts(node: "a", freeMemoryBytes: 8 << 30, tier: .remote, bandwidth: [:]),
            NodeFacts(node: "b", freeMemoryBytes: 8 << 30, tier: .peer, bandwidth: [:]),
        ]
        let placement = LocalityPlacement(assumedBandwidth: LocalityPlacement.untilMeasured)
        #expect(
            placement.place(request, on: nodes) == PlacementDecision(node: "b", tier: .peer, estimatedStartSeconds: 8))
        let ssd = NodeFacts(node: "c", freeMemoryBytes: 8 << 30, tier: .ssd, bandwidth: [:])
        #expect(placement.place(request, on: nodes + [ssd])?.node == "c")
        #expect(CheckpointTier.ssd < .peer && CheckpointTier.peer < .remote)
    }

    /// The one-node placement takes the node there is, whatever its memory (admission decides
    /// on the node), with an estimate only once the node has measured that tier.
    @Test func singleNodePlacementTakesTheNode() {
        let node = NodeFacts(node: "n", freeMemoryBytes: 0, tier: .ssd, bandwidth: [:])
        #expect(
            SingleNodePlacement().place(request, on: [node])
                == PlacementDecision(node: "n", tier: .ssd, estimatedStartSeconds: nil))
        var measured = node
        measured.bandwidth = [.ssd: 2e9]
        measured.queuedSeconds = 1
        #expect(SingleNodePlacement().place(request, on: [measured])?.estimatedStartSeconds == 3)
        #expect(SingleNodePlacement().place(request, on: []) == nil)
    }

    /// The baselines: `random` and `round-robin` spread over the nodes with room whatever they
    /// hold, `least-loaded` takes the node running the fewest generations; each still reports
    /// the locality estimate of the node it chose.
    @Test func theComparisonPolicies() {
        let nodes = [
            NodeFacts(node: "a", freeMemoryBytes: 8 << 30, tier: .dram, bandwidth: bandwidth, runningJobs: 3),
            NodeFacts(node: "b", freeMemoryBytes: 8 << 30, tier: .remote, bandwidth: bandwidth, runningJobs: 1),
            NodeFacts(node: "c", freeMemoryBytes: 9 << 30, tier: .ssd, bandwidth: bandwidth, runningJobs: 1),
            NodeFacts(node: "full", freeMemoryBytes: 1 << 30, tier: .dram, bandwidth: bandwidth),
        ]
        let random = PlacementPolicy.random.placement(assumedBandwidth: [:])
        let picks = Set((0..<200).compactMap { _ in random.place(request, on: nodes)?.node })
        #expect(picks == ["a", "b", "c"])
        // Seeded, its draws repeat.
        let draws = { (seed: UInt64) in
            let seeded = PlacementPolicy.random.placement(assumedBandwidth: [:], seed: seed)
            return (0..<50).compactMap { _ in seeded.place(request, on: nodes)?.node }
        }
        #expect(draws(4) == draws(4))
        #expect(Set(draws(4)) == ["a", "b", "c"])
        #expect(draws(4) != draws(5))
        let roundRobin = PlacementPolicy.roundRobin.placement(assumedBandwidth: [:])
        #expect(
            (0..<6).compactMap { _ in roundRobin.place(request, on: nodes)?.node } == ["a", "b", "c", "a", "b", "c"])
        let leastLoaded = PlacementPolicy.leastLoaded.placement(assumedBandwidth: [:])
        #expect(
            leastLoaded.place(request, on: nodes) == PlacementDecision(node: "c", tier: .ssd, estimatedStartSeconds: 2))
        #expect(PlacementPolicy.locality.placement(assumedBandwidth: [:]).place(request, on: nodes)?.node == "a")
        for policy in PlacementPolicy.allCases {
            #expect(policy.placement(assumedBandwidth: [:]).place(request, on: [nodes[3]]) == nil, "\(policy)")
        }
    }
}

/// Live migration's rules: the source drains (no new requests) while its target starts; jobs
/// move one by one; the source stops only once the migration succeeded and it is empty; a failed
/// migration leaves the source serving.
@Suite struct MigrationStateTests {
    func machine() -> DeploymentStateMachine {
        var settings = ScalingSettings()
        settings.targetConcurrency = 2
        settings.maxInstances = 1
        var next = 0
        return DeploymentStateMachine(settings: settings) {
            next += 1
            return "i\(next)"
        }
    }

    @Test func jobsMoveAndTheSourceStopsOnceTheMigrationSucceeded() {
        var m = machine()
        _ = m.requestArrived(1)
        #expect(m.instanceStarted("i1") == [.dispatch(1, "i1")])
        #expect(m.requestArrived(2) == [.dispatch(2, "i1")])
        #expect(m.beginMigration(from: "i1") == "i2")
        #expect(m.instances["i1"]?.state == .draining && m.instances["i2"]?.state == .starting)
        #expect(m.beginMigration(from: "i1") == nil, "a draining instance does not migrate twice")
        #expect(m.beginMigration(from: "i2") == nil, "nor does one still starting")
        // A request arriving meanwhile waits for the target (the source takes none).
        #expect(m.requestArrived(3) == [])
        #expect(m.jobMoved(from: "i1", to: "i2") == [])
        // Empty, but its migration has not ended: a job may still come back to it.
        #expect(m.jobMoved(from: "i1", to: "i2") == [])
        #expect(m.instances["i1"]?.state == .draining && m.instances["i2"]?.inFlight == 2)
        #expect(m.endMigration(from: "i1", to: "i2", succeeded: true) == [.stop("i1")])
        #expect(m.instances["i2"]?.state == .ready)
        #expect(m.requestFinished(on: "i2", keepAlive: nil) == [.dispatch(3, "i2")])
    }

    @Test func aJobThatReachedTheSourceLateEndsThereAndThenItStops() {
        var m = machine()
        _ = m.requestArrived(1)
        _ = m.instanceStarted("i1")
        _ = m.requestArrived(2)
        #expect(m.beginMigration(from: "i1") == "i2")
        #expect(m.jobMoved(from: "i1", to: "i2") == [])
        #expect(m.endMigration(from: "i1", to: "i2", succeeded: true) == [])
        #expect(m.instances["i1"]?.state == .draining)
        #expect(m.requestFinished(on: "i1", keepAlive: nil) == [.stop("i1")])
    }

    @Test func aFailedMigrationLeavesTheSourceServing() {
        var m = machine()
        _ = m.requestArrived(1)
        _ = m.instanceStarted("i1")
        #expect(m.beginMigration(from: "i1") == "i2")
        #expect(m.requestArrived(2) == [])
        // The target took a job, which came back when it failed before continuing it.
        #expect(m.jobMoved(from: "i1", to: "i2") == [])
        #expect(m.jobMoved(from: "i2", to: "i1") == [])
        #expect(m.endMigration(from: "i1", to: "i2", succeeded: false) == [.dispatch(2, "i1")])
        #expect(m.instances["i1"]?.state == .ready && m.instances["i1"]?.inFlight == 2)
        #expect(m.instanceFailed("i2", reason: "gone") == [])
        #expect(m.instances["i2"] == nil)
        #expect(m.requestFinished(on: "i1", keepAlive: nil) == [])
    }
    /// Rebalancing: after a scale-up the new instance takes half the difference from the busiest
    /// one on another node; an even load, instances on one node and
    /// instances not ready are left alone.
    @Test func rebalancingMovesHalfTheDifferenceToAnotherNode() {
        var settings = ScalingSettings()
        settings.targetConcurrency = 4
        settings.maxInstances = 3
        var next = 0
        var m = DeploymentStateMachine(settings: settings) {
            next += 1
            return "i\(next)"
        }
        #expect(m.requestArrived(1) == [.start("i1")])
        _ = m.instanceStarted("i1")
        for waiter in 2...4 { #expect(m.requestArrived(waiter) == [.dispatch(waiter, "i1")]) }
        #expect(m.requestArrived(5) == [.start("i2")])
        #expect(m.rebalancePlan(node: ["i1": "a", "i2": "b"]) == nil, "the new instance is not ready yet")
        #expect(m.instanceStarted("i2") == [.dispatch(5, "i2")])
        // 4 against 1: one job moves (3 against 2).
        let plan = DeploymentStateMachine.Rebalance(from: "i1", to: "i2", jobs: 1)
        #expect(m.rebalancePlan(node: ["i1": "a", "i2": "b"]) == plan)
        #expect(m.rebalancePlan(node: ["i1": "a", "i2": "a"]) == nil, "one node's instances share its cores")
        #expect(m.rebalancePlan(node: ["i1": "a"]) == nil, "an instance of unknown node is left alone")
        #expect(m.jobMoved(from: "i1", to: "i2") == [])
        #expect(m.instances["i1"]?.inFlight == 3 && m.instances["i2"]?.inFlight == 2)
        #expect(m.rebalancePlan(node: ["i1": "a", "i2": "b"]) == nil, "3 against 2 is even enough")
        // 3 against 0: one moves.
        _ = m.requestFinished(on: "i2", keepAlive: nil)
        _ = m.requestFinished(on: "i2", keepAlive: nil)
        #expect(m.instances["i1"]?.inFlight == 3 && m.instances["i2"]?.inFlight == 0)
        #expect(m.rebalancePlan(node: ["i1": "a", "i2": "b"])?.jobs == 1)
        // A draining instance (being migrated) is neither source nor target.
        _ = m.beginMigration(from: "i1")
        #expect(m.rebalancePlan(node: ["i1": "a", "i2": "b", "i3": "c"]) == nil)
    }
}

/// The locality-driven migration cost model: move a busy instance off the node where the
/// request's checkpoint is fast, only when that beats loading elsewhere.
@Suite struct MigrationPlannerTests {
    let request = PlacementRequest(model: "m", checkpointBytes: 1_000_000_000, memoryBytes: 1_200_000_000)
    let rates: [CheckpointTier: Double] = [.dram: 8e9, .ssd: 1e9, .remote: 1e8]

    func nodes(bTier: CheckpointTier = .remote, bFree: Int = 4_000_000_000) -> [NodeFacts] {
        [
            NodeFacts(node: "a", freeMemoryBytes: 100_000_000, tier: .dram, bandwidth: rates),
            NodeFacts(node: "b", freeMemoryBytes: bFree, tier: bTier, bandwidth: rates),
        ]
    }

    func busy(tokens: Int = 500, memory: Int = 1_500_000_000) -> BusyInstance {
        BusyInstance(
            id: "s", node: "a", memoryBytes: memory, checkpointBytes: 1_000_000_000, tokens: tokens,
            tiers: ["a": .dram, "b": .dram])
    }

    func plain(_ nodes: [NodeFacts]) -> Double? {
        LocalityPlacement(assumedBandwidth: rates).place(request, on: nodes)?.estimatedStartSeconds
    }

    @Test func aBusyInstanceMovesWhenLoadingElsewhereIsSlow() throws {
        let nodes = nodes()
        #expect(plain(nodes) == 10)  // b fetches from the remote store
        let plan = try #require(
            MigrationPlanner.plan(
                request, nodes: nodes, busy: [busy()], beating: plain(nodes), prefillTokensPerSecond: ["b": 1000],
                assumedBandwidth: rates))
        #expect(plan.victim == "s" && plan.from == "a" && plan.to == "b" && plan.tier == .dram)
        // The victim's load on b from DRAM, its 500 tokens at 1000/s, then the request's load on a.
        #expect(abs(plan.migrationSeconds - (0.125 + 0.5)) < 1e-9)
        #expect(abs(plan.estimatedStartSeconds - (0.125 + 0.5 + 0.125)) < 1e-9)
    }

    @Test func noMigrationWhenItDoesNotPay() {
        // b holds the request's checkpoint in DRAM too: loading there is as fast as it gets.
        let near = nodes(bTier: .dram)
        #expect(
            MigrationPlanner.plan(
                request, nodes: near, busy: [busy()], beating: plain(near), prefillTokensPerSecond: [:],
                assumedBandwidth: rates) == nil)
        // Too many tokens to recompute (the pause budget), or slow to recompute.
        let far = nodes()
        #expect(
            MigrationPlanner.plan(
                request, nodes: far, busy: [busy(tokens: 20_000)], beating: plain(far), prefillTokensPerSecond: [:],
                assumedBandwidth: rates) == nil)
        #expect(
            MigrationPlanner.plan(
                request, nodes: far, busy: [busy()], beating: plain(far), prefillTokensPerSecond: ["b": 10],
                assumedBandwidth: rates) == nil)
        // No node has room for the victim.
        let full = nodes(bFree: 1_000_000_000)
        #expect(
            MigrationPlanner.plan(
                request, nodes: full, busy: [busy()], beating: plain(full), prefillTokensPerSecond: [:],
                assumedBandwidth: rates) == nil)
    }

    @Test func aSmallVictimMakesRoomWhereNothingFits() throws {
        // b has room for the victim but not for the request: without migration the request waits.
        var nodes = nodes(bFree: 1_000_000_000)
        nodes[0].freeMemoryBytes = 300_000_000
        #expect(plain(nodes) == nil)
        let plan = try #require(
            MigrationPlanner.plan(
                request, nodes: nodes, busy: [busy(memory: 1_000_000_000)], beating: nil, prefillTokensPerSecond: [:],
                assumedBandwidth: rates))
        #expect(plan.to == "b" && plan.from == "a")
    }

}
