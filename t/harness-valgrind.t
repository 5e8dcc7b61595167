# The valgrind report reader both harnesses use (Test::Edge::Valgrind):
# which records fail a test and which are only printed.  Made-up reports in
# valgrind's format; no nginx, no valgrind needed.
use strict;
use warnings;

use File::Temp qw(tempdir);
use Test::More;
use Test::Edge::Valgrind;

my $dir = tempdir(CLEANUP => 1);

sub report {
    my ($pid, @records) = @_;
    open my $fh, '>', "$dir/valgrind.$pid.log" or die $!;
    print $fh "==$pid== Memcheck, a memory error detector\n==$pid==\n";
    for my $rec (@records) {
        print $fh map { "==$pid== $_\n" } split /\n/, $rec;
        print $fh "==$pid==\n";
    }
    close $fh;
}

my $ours_read = <<'REC';
Invalid read of size 8
   at 0x4A1B2C3: ngx_edge_redis_reply (ngx_edge_redis.c:120)
   by 0x4A1B2D4: ngx_http_ratelimit_redis_read (ngx_http_ratelimit_redis.c:88)
   by 0x154CFE: ngx_epoll_process_events (in /usr/sbin/nginx)
 Address 0x5a0 is 16 bytes inside a block of size 64 free'd
REC
my $ours_leak = <<'REC';
64 bytes in 1 blocks are definitely lost in loss record 3 of 9
   at 0x48417B4: malloc (in /usr/libexec/valgrind/vgpreload_memcheck-amd64-linux.so)
   by 0x4A1C000: ngx_http_metrics_init_zone (ngx_http_metrics_zone.c:40)
REC
my $nginx_leak = <<'REC';
8 bytes in 1 blocks are definitely lost in loss record 1 of 23
   at 0x48417B4: malloc (in /usr/libexec/valgrind/vgpreload_memcheck-amd64-linux.so)
   by 0x154CFE: ngx_alloc (in /usr/sbin/nginx)
   by 0x12E404: ngx_set_environment (in /usr/sbin/nginx)
REC
my $ours_soft = <<'REC';
Syscall param write(buf) points to uninitialised byte(s)
   at 0x4B2C000: write (write.c:26)
   by 0x4A1B2C3: ngx_edge_redis_send (ngx_edge_redis.c:60)
REC
my $summary = <<'REC';
HEAP SUMMARY:
    in use at exit: 1,024 bytes in 3 blocks
REC

report(101, $nginx_leak, $summary);
my ($fatal, $other) = Test::Edge::Valgrind::records($dir);
is(scalar @$fatal, 0, "nginx's own leak is not fatal");
is(scalar @$other, 1, '... it is reported');
like($other->[0], qr/ngx_set_environment/, '... with its stack');

report(102, $ours_read, $ours_soft);
report(103, $ours_leak);
($fatal, $other) = Test::Edge::Valgrind::records($dir);
is(scalar @$fatal, 2,
   'an invalid read and a definite leak in our frames are fatal');
like($fatal->[0], qr/^Invalid read.*ngx_edge_redis_reply/s,
     '... the invalid read, from the worker report that has it');
like($fatal->[1], qr/definitely lost.*ngx_http_metrics_init_zone/s,
     '... the leak, from the other worker report');
is(scalar @$other, 2,
   'a soft kind in our frames is only reported, as is nginx\'s leak');
like(Test::Edge::Valgrind::summary($other), qr/Syscall param/,
     'the summary shows the first lines of each');

my @cmd = Test::Edge::Valgrind::command('/x/logs', '/usr/sbin/nginx');
is($cmd[0], 'valgrind', 'the command runs valgrind');
ok((grep { $_ eq '--log-file=/x/logs/valgrind.%p.log' } @cmd),
   '... one report per process in the log directory');
ok((grep { $_ eq '--keep-debuginfo=yes' } @cmd),
   '... keeping the symbols of the modules nginx unloads before the leak'
   . ' check');
ok(!(grep { $_ eq '--trace-children=yes' } @cmd),
   '... not following execs of a binary');
@cmd = Test::Edge::Valgrind::command('/x/logs', 't/bin/nginx');
ok((grep { $_ eq '--trace-children=yes' } @cmd),
   '... following the exec of a wrapper script');

done_testing();
