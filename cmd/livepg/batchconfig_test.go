package main

import (
	"strings"
	"testing"
	"time"
)

func TestPublishBatchWindowSetting(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		value string
		want  time.Duration // what the node is given; negative is off
	}{
		{"", time.Millisecond},
		{"0", -1},
		{"2ms", 2 * time.Millisecond},
	} {
		cfg, err := loadConfig(func(k string) string {
			return map[string]string{"LIVEPG_PUBLISH_BATCH_WINDOW": tc.value}[k]
		})
		if err != nil {
			t.Fatalf("%q: %v", tc.value, err)
		}
		if cfg.Node.PublishBatchWindow != tc.want {
			t.Errorf("%q: window %s, want %s", tc.value, cfg.Node.PublishBatchWindow, tc.want)
		}
	}
	for _, bad := range []string{"-1ms", "soon", "5s"} {
		_, err := loadConfig(func(k string) string {
			return map[string]string{"LIVEPG_PUBLISH_BATCH_WINDOW": bad}[k]
		})
		if err == nil || !strings.Contains(err.Error(), "LIVEPG_PUBLISH_BATCH_WINDOW") {
			t.Errorf("%q: err %v, want one naming the variable", bad, err)
		}
	}
}
