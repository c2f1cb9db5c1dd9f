import ArgumentParser

struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure sllm against its peers in one run and print the ratios.",
        discussion: "Peers (fio) come from scripts/install-bench-tools.sh; a missing peer is reported, not faked.",
        subcommands: [
            HashBench.self, ConvertBench.self, LoadBench.self, GenerateBench.self, ServeBench.self, DeployBench.self,
            PopulateBench.self, HopBench.self, ClusterBench.self, FailoverBench.self, PlacementBench.self,
            ScaleOutBench.self, MigrateBench.self, ConsoleBench.self,
        ])
}
