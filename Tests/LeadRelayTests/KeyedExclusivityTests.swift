import TestSupport
import Testing

@testable import LeadRelay

@Suite struct KeyedExclusivityTests {
    @Test func oneBodyPerKeyAtATime() async {
        let exclusivity = KeyedExclusivity()
        let inside = Locked((current: 0, highest: 0, total: 0))
        await withTaskGroup { group in
            for _ in 0..<100 {
                group.addTask {
                    await exclusivity.withExclusiveAccess(to: "ce:portal|1") {
                        inside.withLock { state in
                            state.current += 1
                            state.highest = max(state.highest, state.current)
                        }
                        for _ in 0..<3 { await Task.yield() }
                        inside.withLock { state in
                            state.current -= 1
                            state.total += 1
                        }
                    }
                }
            }
        }
        #expect(inside.value.highest == 1)
        #expect(inside.value.total == 100)
        #expect(exclusivity.activeKeyCount == 0)
    }

    @Test func waitersGoInArrivalOrder() async throws {
        let exclusivity = KeyedExclusivity()
        let holderEntered = Gate()
        let releaseHolder = Gate()
        let order = Locked<[Int]>([])
        try await withThrowingTaskGroup { group in
            group.addTask {
                await exclusivity.withExclusiveAccess(to: "k") {
                    holderEntered.open()
                    await releaseHolder.wait()
                }
            }
            await holderEntered.wait()
            for index in 0..<10 {
                group.addTask {
                    await exclusivity.withExclusiveAccess(to: "k") { order.withLock { $0.append(index) } }
                }
                try await waitUntil { exclusivity.waitingCount(for: "k") == index + 1 }
            }
            releaseHolder.open()
        }
        #expect(order.value == Array(0..<10))
        #expect(exclusivity.activeKeyCount == 0)
    }

    @Test func otherKeysAreNotHeldUp() async {
        let exclusivity = KeyedExclusivity()
        let holderEntered = Gate()
        let releaseHolder = Gate()
        await withTaskGroup { group in
            group.addTask {
                await exclusivity.withExclusiveAccess(to: "a") {
                    holderEntered.open()
                    await releaseHolder.wait()
                }
            }
            await holderEntered.wait()
            let value = await exclusivity.withExclusiveAccess(to: "b") { 42 }
            #expect(value == 42)
            #expect(exclusivity.activeKeyCount == 1)
            releaseHolder.open()
        }
        #expect(exclusivity.activeKeyCount == 0)
    }

    @Test func errorsPropagateAndReleaseTheKey() async throws {
        struct Failure: Error {}
        let exclusivity = KeyedExclusivity()
        await #expect(throws: Failure.self) {
            try await exclusivity.withExclusiveAccess(to: "k") { throw Failure() }
        }
        #expect(exclusivity.activeKeyCount == 0)
        #expect(await exclusivity.withExclusiveAccess(to: "k") { "again" } == "again")
    }

    @Test func aCancelledWaiterStillWaitsItsTurnAndLeavesNoEntry() async throws {
        let exclusivity = KeyedExclusivity()
        let holderEntered = Gate()
        let releaseHolder = Gate()
        let holderDone = Locked(false)
        let waiterSawHolderDone = Locked<Bool?>(nil)
        let holder = Task {
            await exclusivity.withExclusiveAccess(to: "k") {
                holderEntered.open()
                await releaseHolder.wait()
                holderDone.value = true
            }
        }
        await holderEntered.wait()
        let waiter = Task {
            await exclusivity.withExclusiveAccess(to: "k") {
                waiterSawHolderDone.value = holderDone.value
            }
        }
        try await waitUntil { exclusivity.waitingCount(for: "k") == 1 }
        waiter.cancel()
        releaseHolder.open()
        await holder.value
        await waiter.value
        #expect(waiterSawHolderDone.value == true)
        #expect(exclusivity.activeKeyCount == 0)
    }
}
