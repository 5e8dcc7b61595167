package Test::Edge::Valgrind;

# Running nginx under valgrind memcheck and reading its reports, shared by
# both harnesses: the block-format one (Test::Nginx::Util) and the plain
# Test::More one (Test::Edge::Nginx).  TEST_NGINX_USE_VALGRIND turns it on
# (1, or the valgrind options to use instead of ours).
#
#   my @cmd = (Test::Edge::Valgrind::command($log_dir, $nginx), $nginx, ...);
#   my ($fatal, $other) = Test::Edge::Valgrind::records($log_dir);
#
# A record is fatal when it is of a hard kind (invalid read/write/free, a
# jump on uninitialised memory, a definite leak) and one of our frames is
# on its stack; all the others are only worth a diag.

use strict;
use warnings;

use Cwd ();
use File::Basename ();
use File::Spec;

our $Enabled  = $ENV{TEST_NGINX_USE_VALGRIND} ? 1 : 0;
# Everything is much slower under valgrind: the harnesses scale their waits
# (never what they assert) by this factor.
our $Slowdown = $Enabled ? 5 : 1;

# this file is t/lib/Test/Edge/Valgrind.pm in the repository
my $RepoRoot = Cwd::abs_path(File::Spec->rel2abs(
    File::Basename::dirname(__FILE__) . '/../../../..'));

sub repo_root { $RepoRoot }

sub is_script {
    my ($path) = @_;
    open my $fh, '<', $path or return 0;
    read $fh, my $magic, 2;
    return ($magic // '') eq '#!';
}

# The valgrind command line to put in front of $nginx's, writing one report
# per process into $log_dir/valgrind.<pid>.log (valgrind follows nginx's
# forks, so the master and every worker get their own).
sub command {
    my ($log_dir, $nginx) = @_;
    my $opts = $ENV{TEST_NGINX_USE_VALGRIND} // 1;
    my @cmd = ('valgrind');
    if ($opts =~ /^\d+$/) {
        # --keep-debuginfo: nginx dlclose()s the modules before it exits,
        # so without it the leak records, made at exit, show our frames as
        # "???" and a leak in our code would pass as someone else's
        push @cmd, qw(--tool=memcheck --leak-check=full
                      --show-leak-kinds=definite --num-callers=30
                      --keep-debuginfo=yes);
    } else {
        push @cmd, split ' ', $opts;
    }
    push @cmd, "--log-file=$log_dir/valgrind.%p.log";
    push @cmd, "--suppressions=$RepoRoot/t/valgrind.suppress"
        if -f "$RepoRoot/t/valgrind.suppress";
    # TEST_NGINX_BINARY may be a script that execs nginx (t/bin/nginx):
    # valgrind must follow the exec, or nginx would run without it.
    push @cmd, '--trace-children=yes' if is_script($nginx);
    return @cmd;
}

# Record kinds that are fatal when our code is on the stack ...
my @Hard = ('Invalid read', 'Invalid write', 'Invalid free',
            'Conditional jump or move depends on uninitialised',
            'definitely lost');
# ... and further ones that are only reported.
my @Soft = ('Use of uninitialised', 'Syscall param', 'Mismatched free',
            'Source and destination overlap');
my $HardKinds  = join '|', map { quotemeta } @Hard;
my $ErrorKinds = join '|', map { quotemeta } @Hard, @Soft;

# Frames that belong to this project: override with TEST_NGINX_VALGRIND_OURS.
sub ours_regex {
    my $re = $ENV{TEST_NGINX_VALGRIND_OURS}
        || 'ngx_http_(?:ratelimit|cache|breaker|metrics)_|ngx_edge_';
    return qr/$re|\(in \Q$RepoRoot\E\//;
}

# Returns ([fatal records], [other records]) of the reports in $log_dir;
# each record is its text.
sub records {
    my ($log_dir) = @_;
    my (@fatal, @other);
    my $ours = ours_regex();
    for my $file (sort glob "$log_dir/valgrind.*.log") {
        open my $fh, '<', $file or next;
        my (@recs, @cur);
        while (my $line = <$fh>) {
            chomp $line;
            next unless $line =~ /^==\d+==(?: (.*))?$/;
            my $text = $1 // '';
            if ($text =~ /^\s*$/) {
                push @recs, [@cur] if @cur;
                @cur = ();
            } else {
                push @cur, $text;
            }
        }
        push @recs, [@cur] if @cur;
        for my $rec (@recs) {
            next unless $rec->[0] =~ /$ErrorKinds/;
            my $text = join "\n", @$rec;
            my $mine = grep { /^\s+(?:at|by) 0x/ && $_ =~ $ours } @$rec;
            if ($mine && $rec->[0] =~ /$HardKinds/) {
                push @fatal, $text;
            } else {
                push @other, $text;
            }
        }
    }
    return (\@fatal, \@other);
}

# The first lines of at most five of @$other, for a diag.
sub summary {
    my ($other) = @_;
    my @out;
    for my $rec (@$other[0 .. ($#$other > 4 ? 4 : $#$other)]) {
        my @l = split /\n/, $rec;
        push @out, "  " . join "\n  ", @l[0 .. ($#l > 3 ? 3 : $#l)];
    }
    return join "\n", @out;
}

1;
