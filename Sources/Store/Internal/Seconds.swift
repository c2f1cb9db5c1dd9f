import Checkpoint

/// Seconds from `start` until now on the continuous clock.
public func seconds(since start: ContinuousClock.Instant) -> Double { (ContinuousClock.now - start).seconds }
