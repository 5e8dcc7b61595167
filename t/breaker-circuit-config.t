# ngx_http_breaker_module, route circuits: bad configurations are refused
# by nginx -t with a message naming the directive, the bad value and the
# place; a good one with every parameter is accepted.
use Test::Nginx::Socket 'no_plan';

no_shuffle();
run_tests();

__DATA__

=== TEST 1: every parameter, accepted
--- http_config
    breaker_zone br 1m;
    breaker_circuit up zone=br window=20s buckets=20 min_calls=5
        failure_rate=40 slow_rate=60 slow_call=2s statuses=500,502,503,504,429
        open=10s open_max=2m probes=5 half_open_wait=15s jitter=20%
        mode=on;
    breaker_circuit b zone=br mode=metrics_only;
    breaker_circuit c zone=br mode=disabled half_open_wait=1ms;
    breaker_circuit d zone=br mode=forced_open;
    breaker up;
--- config
    location = /t { return 200 "ok $breaker_state\n"; }
    location = /off { breaker off; return 200 "[$breaker_state]\n"; }
    location = /d { breaker d subrequests; return 200 "$breaker_state\n"; }
--- request eval
["GET /t", "GET /off", "GET /d"]
--- response_body eval
["ok closed\n", "[]\n", "forced_open\n"]
--- no_error_log
[error]
[alert]
[crit]
[emerg]



=== TEST 2: an unknown circuit
--- http_config
    breaker_zone br 1m;
--- config
    location = /t { breaker nosuch; return 200; }
--- must_die
--- error_log eval
qr/\[emerg\] .*unknown breaker circuit "nosuch" in "breaker" \(no "breaker_circuit nosuch"\) in \S+nginx\.conf:\d+/



=== TEST 3: a zone that is not declared
--- http_config
    breaker_circuit up zone=nowhere;
--- config
    location = /t { breaker up; return 200; }
--- must_die
--- error_log eval
qr/\[emerg\] .*breaker zone "nowhere" is used but not declared by "breaker_zone"/



=== TEST 4: no zone=
--- http_config
    breaker_zone br 1m;
    breaker_circuit up min_calls=3;
--- config
    location = /t { return 200; }
--- must_die
--- error_log eval
qr/\[emerg\] .*breaker_circuit "up" has no "zone=" in \S+nginx\.conf:\d+/



=== TEST 5: a failure rate above 100
--- http_config
    breaker_zone br 1m;
    breaker_circuit up zone=br failure_rate=101;
--- config
    location = /t { return 200; }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid value "failure_rate=101" in "breaker_circuit", it must be between 1 and 100 in \S+nginx\.conf:\d+/



=== TEST 6: a slow rate of 0
--- http_config
    breaker_zone br 1m;
    breaker_circuit up zone=br slow_rate=0%;
--- config
    location = /t { return 200; }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid value "slow_rate=0%" in "breaker_circuit", it must be between 1 and 100/



=== TEST 7: more buckets than the window has milliseconds
--- http_config
    breaker_zone br 1m;
    breaker_circuit up zone=br window=50ms buckets=100;
--- config
    location = /t { return 200; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"breaker_circuit": buckets=100 is more than window=50ms allows \(a bucket is at least 1ms\) in \S+nginx\.conf:\d+/



=== TEST 8: probes=0
--- http_config
    breaker_zone br 1m;
    breaker_circuit up zone=br probes=0;
--- config
    location = /t { return 200; }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid value "probes=0" in "breaker_circuit", it must be between 1 and 1000/



=== TEST 8b: half_open_wait=0 (a probe never answered would hold the circuit half-open)
--- http_config
    breaker_zone br 1m;
    breaker_circuit up zone=br half_open_wait=0;
--- config
    location = /t { return 200; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"half_open_wait=0"/



=== TEST 9: open_max below open
--- http_config
    breaker_zone br 1m;
    breaker_circuit up zone=br open=1m open_max=30s;
--- config
    location = /t { return 200; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"breaker_circuit": open_max=30000ms is less than open=60000ms in \S+nginx\.conf:\d+/



=== TEST 10: a status out of range in statuses=
--- http_config
    breaker_zone br 1m;
    breaker_circuit up zone=br statuses=500,700;
--- config
    location = /t { return 200; }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid status "700" in "statuses=500,700" of "breaker_circuit", it must be between 100 and 599/



=== TEST 11: an unknown mode
--- http_config
    breaker_zone br 1m;
    breaker_circuit up zone=br mode=sometimes;
--- config
    location = /t { return 200; }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid "mode=sometimes" in "breaker_circuit", it must be "mode=on", "mode=metrics_only", "mode=forced_open" or "mode=disabled"/



=== TEST 12: an unknown parameter
--- http_config
    breaker_zone br 1m;
    breaker_circuit up zone=br treshold=5;
--- config
    location = /t { return 200; }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid parameter "treshold=5" in "breaker_circuit"/



=== TEST 13: a duplicate circuit
--- http_config
    breaker_zone br 1m;
    breaker_circuit up zone=br;
    breaker_circuit up zone=br;
--- config
    location = /t { return 200; }
--- must_die
--- error_log eval
qr/\[emerg\] .*duplicate breaker_circuit "up"/



=== TEST 14: a duplicate zone
--- http_config
    breaker_zone br 1m;
    breaker_zone br 1m;
--- config
    location = /t { return 200; }
--- must_die
--- error_log eval
qr/\[emerg\] .*duplicate breaker_zone "br"/



=== TEST 15: a zone too small
--- http_config
    breaker_zone br 1k;
--- config
    location = /t { return 200; }
--- must_die
--- error_log eval
qr/\[emerg\] .*breaker_zone "br" is too small "1k"/



=== TEST 16: a fallback that is neither a URI nor a named location
--- http_config
    breaker_zone br 1m;
    breaker_circuit up zone=br;
--- config
    location = /t { breaker up; breaker_fallback fallback.html; return 200; }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid breaker_fallback "fallback.html", it must be a URI starting with "\/" or a named location starting with "@"/



=== TEST 17: a bad time
--- http_config
    breaker_zone br 1m;
    breaker_circuit up zone=br slow_call=fast;
--- config
    location = /t { return 200; }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid time "slow_call=fast" in "breaker_circuit", it must be between 1ms and 24h/



=== TEST 18: a bad parameter after the circuit's name in breaker
--- http_config
    breaker_zone br 1m;
    breaker_circuit up zone=br;
--- config
    location = /t { breaker up always; return 200; }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid parameter "always" in "breaker"/



=== TEST 19: a breaker_status outside 400..599
--- config
    location = /t { breaker_status 200; return 200; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"breaker_status"/
