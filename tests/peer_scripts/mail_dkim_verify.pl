#!/usr/bin/perl
# Verify the message on standard input with Perl's Mail::DKIM::Verifier (DKIM-Signature and
# DomainKey-Signature fields alike) and print one JSON object: the overall result and one entry per
# signature, in the order Mail::DKIM lists them. Keys are looked up with Net::DNS at --nameserver
# and --port, so the tests can serve them from their own DNS server on loopback.
#
# Usage: mail_dkim_verify.pl --nameserver 127.0.0.1 --port 5353 [--strict] < message
# The message must have CRLF line endings (Mail::DKIM hashes the bytes it is given).
use strict;
use warnings;

use Getopt::Long;
use JSON::PP;
use Net::DNS;
use Mail::DKIM::DNS;
use Mail::DKIM::Verifier;

my $nameserver = '127.0.0.1';
my $port       = 53;
my $strict     = 0;
GetOptions(
    'nameserver=s' => \$nameserver,
    'port=i'       => \$port,
    'strict'       => \$strict,
) or die "usage: $0 --nameserver ADDRESS --port N [--strict] < message\n";

Mail::DKIM::DNS::resolver(
    Net::DNS::Resolver->new(
        nameservers => [$nameserver],
        port        => $port,
        recurse     => 1,
        retry       => 1,
        udp_timeout => 5,
        tcp_timeout => 5,
    )
);

binmode STDIN;
my $message = do { local $/; <STDIN> };

my $verifier = Mail::DKIM::Verifier->new( Strict => $strict );
$verifier->PRINT($message);
$verifier->CLOSE;

my @signatures;
foreach my $signature ( $verifier->signatures ) {
    my $domainkeys = $signature->isa('Mail::DKIM::DkSignature');
    push @signatures, {
        type      => $domainkeys ? 'domainkeys' : 'dkim',
        result    => scalar $signature->result,
        detail    => scalar $signature->result_detail,
        domain    => scalar $signature->domain,
        selector  => scalar $signature->selector,
        algorithm => scalar $signature->algorithm,
        method    => join( "/", $signature->canonicalization ),
        data      => scalar $signature->data,
    };
}

print JSON::PP->new->canonical->encode(
    {
        result     => scalar $verifier->result,
        detail     => scalar $verifier->result_detail,
        signatures => \@signatures,
    }
), "\n";
