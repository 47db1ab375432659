package aigw

import "encoding/json"

// Stats is a snapshot of a client's key health: aigw_stats_json, typed
// (see the README, "Key health").
type Stats struct {
	Keys        []HealthStat     `json:"keys"`      // per key of the current configuration
	Endpoints   []HealthStat     `json:"endpoints"` // per key and model used
	Backends    []HealthStat     `json:"backends"`  // per provider and model used
	Hosts       []HealthStat     `json:"hosts"`     // per scheme://host:port used
	HealthStore HealthStoreStats `json:"healthStore"`
	RetryBudget RetryBudgetStats `json:"retryBudget"`
}

// HealthStat is one entry of a snapshot.
type HealthStat struct {
	Provider string `json:"provider,omitempty"` // keys, endpoints, backends
	ID       string `json:"id,omitempty"`       // keys, endpoints: the key's id
	Model    string `json:"model,omitempty"`    // endpoints, backends
	Host     string `json:"host,omitempty"`     // hosts
	// keys: "ready", "benched"; endpoints: "ready", "cooling", "benched",
	// "open", "half_open"; backends, hosts: "closed", "open", "half_open"
	State           string            `json:"state"`
	Reason          string            `json:"reason"` // the failure class behind State; "" none
	WaitMs          int64             `json:"waitMs"` // left in State
	Requests        uint64            `json:"requests"`
	Successes       uint64            `json:"successes"`
	Failures        uint64            `json:"failures"`
	FailuresByClass map[string]uint64 `json:"failuresByClass"` // "rate_limit": 3, ...
	Skips           uint64            `json:"skips"`
	Latency         LatencyStats      `json:"latencyMs"`
}

// LatencyStats are a stat's success latencies in ms; nil with none.
type LatencyStats struct {
	Count uint64 `json:"count"`
	Mean  *int64 `json:"mean"`
	P50   *int64 `json:"p50"`
	P90   *int64 `json:"p90"`
	P99   *int64 `json:"p99"`
	Max   *int64 `json:"max"`
}

// HealthStoreStats is the health store's kind ("local", "redis") and state
// ("ok", "connecting", "connected", "fallback"); the counters are a shared
// store's.
type HealthStoreStats struct {
	Kind       string `json:"kind"`
	State      string `json:"state"`
	Syncs      uint64 `json:"syncs"`
	Writes     uint64 `json:"writes"`
	Claims     uint64 `json:"claims"`
	Errors     uint64 `json:"errors"`
	Fallbacks  uint64 `json:"fallbacks"`
	Recoveries uint64 `json:"recoveries"`
	Ignored    uint64 `json:"ignored"`
	RetryInMs  *int64 `json:"retryInMs,omitempty"`
}

// RetryBudgetStats is the retry budget over its window.
type RetryBudgetStats struct {
	Enabled      bool   `json:"enabled"`
	Percent      int    `json:"percent"`
	MinPerSecond int    `json:"minPerSecond"`
	WindowMs     int64  `json:"windowMs"`
	Requests     uint64 `json:"requests"`
	Retries      uint64 `json:"retries"`
	Denied       uint64 `json:"denied"`
	Available    *int64 `json:"available"` // nil when the budget is off
}

// Stats is a typed snapshot of the client's key health.  Safe to call while
// requests are in flight.
func (cl *Client) Stats() (*Stats, error) {
	js, err := cl.StatsJSON()
	if err != nil {
		return nil, err
	}
	var s Stats
	if err := json.Unmarshal([]byte(js), &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// Key is the entry of the key with that id (the first, when several
// providers hold one), or nil.
func (s *Stats) Key(id string) *HealthStat {
	for i := range s.Keys {
		if s.Keys[i].ID == id {
			return &s.Keys[i]
		}
	}
	return nil
}

// Endpoint is the entry of that key with that upstream model, or nil.
func (s *Stats) Endpoint(id, model string) *HealthStat {
	for i := range s.Endpoints {
		if s.Endpoints[i].ID == id && s.Endpoints[i].Model == model {
			return &s.Endpoints[i]
		}
	}
	return nil
}
