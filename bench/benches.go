package main

import (
	"fmt"
	"strings"
)

// benches lists every bench in the order one repetition runs them. Names
// are what -only matches.
func benches() []Bench {
	list := []Bench{
		{Name: "publish", Run: benchPublish},
		{Name: "roundtrip", Run: benchRoundTrip},
		{Name: "roundtrip/watermill", Run: benchWatermill},
		{Name: "floor/life", Run: floorTasks(floorLifecycle)},
		{Name: "floor/all", Run: floorTasks(floorAll)},
		{Name: "floor/all-ce", Run: floorTasks(floorAllCE)},
	}
	for _, o := range floorCandidates {
		list = append(list, Bench{Name: "floor/" + strings.ReplaceAll(o.name, ".", "-"), Run: floorTasks(o)})
	}
	for _, m := range growthMutators {
		list = append(list, Bench{Name: fmt.Sprintf("tasks/all/m%d", m), Run: oursTasks(recordAll, m, false)})
	}
	list = append(list,
		Bench{Name: "tasks/lifecycle/m0", Run: oursTasks(recordLifecycle, 0, false)},
		Bench{Name: "tasks/all/m0/defaults", Run: oursTasks(recordAll, 0, true)},
		Bench{Name: "submit", Run: benchSubmit},
		Bench{Name: "asynq/defaults", Run: asynqBench(false)},
		Bench{Name: "asynq/tuned", Run: asynqBench(true)},
		Bench{Name: "river/defaults", Run: riverBench(false)},
		Bench{Name: "river/tuned", Run: riverBench(true)},
		Bench{Name: "sqlite/apply", Run: benchApply},
		Bench{Name: "rebuild", Run: benchRebuild},
		Bench{Name: "replay", Run: benchReplay},
		Bench{Name: "qtasksd/rss", Run: benchRSS},
	)
	return list
}
