#!/usr/bin/perl
# Perl Mail::DKIM as a peer for mailtoaster's interop tests (tests/peers.py drives it).
#
#   mail_dkim.pl verify --nameserver 127.0.0.1 --port N [--strict] < message
#   mail_dkim.pl sign --type dkim|domainkeys --algorithm A --method M --domain D --selector S
#                     --key private.pem [--headers from:to] [--timestamp T] [--identity I] < message
#   mail_dkim.pl serve --nameserver 127.0.0.1 --port N
#
# verify prints one JSON object: Mail::DKIM::Verifier's overall result and one entry per
# DKIM-Signature or DomainKey-Signature. sign prints the signature field Mail::DKIM::Signer makes
# (a DomainKey-Signature through a Mail::DKIM::DkSignature policy: this version has no DomainKeys
# signer of its own), CRLF-terminated; a DomainKey-Signature without --headers has no h= tag.
# serve answers many requests in one process, so the tests pay Perl's start-up once: each request
# is one JSON line {"command": "verify"|"sign", "options": {...}, "length": N} followed by N octets
# of message, each answer one JSON line ({"error": "..."} on failure).
# Messages must have CRLF line endings: Mail::DKIM hashes the octets it is given.
use strict;
use warnings;

use Getopt::Long qw(GetOptionsFromArray);
use JSON::PP;
use Net::DNS;
use Mail::DKIM::DNS;
use Mail::DKIM::Verifier;
use Mail::DKIM::Signer;
use Mail::DKIM::Signature;
use Mail::DKIM::DkSignature;
use Mail::DKIM::TextWrap;    # loaded, Mail::DKIM folds the fields it makes (as its dkimsign.pl does)

my $JSON = JSON::PP->new->canonical;

sub use_nameserver {
    my ( $nameserver, $port ) = @_;
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
}

sub verify {
    my ( $message, $options ) = @_;
    my $verifier = Mail::DKIM::Verifier->new( Strict => $options->{strict} ? 1 : 0 );
    $verifier->PRINT($message);
    $verifier->CLOSE;
    my @signatures = map {
        {
            type     => $_->isa('Mail::DKIM::DkSignature') ? 'domainkeys' : 'dkim',
            result   => scalar $_->result,
            detail   => scalar $_->result_detail,
            domain   => scalar $_->domain,
            selector => scalar $_->selector,
            method   => join( '/', $_->canonicalization ),
        }
    } $verifier->signatures;
    return {
        result     => scalar $verifier->result,
        detail     => scalar $verifier->result_detail,
        signatures => \@signatures,
    };
}

sub sign {
    my ( $message, $opt ) = @_;
    foreach my $required (qw(type algorithm method domain selector key)) {
        die "--$required is required\n" unless defined $opt->{$required};
    }
    my $policy = sub {
        my $signer = shift;
        my %fields = (
            Algorithm => $opt->{algorithm},
            Method    => $opt->{method},
            Domain    => $opt->{domain},
            Selector  => $opt->{selector},
        );
        if ( $opt->{type} eq 'domainkeys' ) {
            $fields{Headers} = $opt->{headers} if defined $opt->{headers};
            $signer->add_signature( Mail::DKIM::DkSignature->new(%fields) );
        }
        elsif ( $opt->{type} eq 'dkim' ) {
            $fields{Headers}   = $opt->{headers} // $signer->headers;
            $fields{Timestamp} = $opt->{timestamp} // time;
            $fields{Identity}  = $opt->{identity} if defined $opt->{identity};
            $signer->add_signature( Mail::DKIM::Signature->new(%fields) );
        }
        else {
            die "--type must be dkim or domainkeys\n";
        }
        return;
    };
    my $signer = Mail::DKIM::Signer->new( Policy => $policy, KeyFile => $opt->{key} );
    $signer->PRINT($message);
    $signer->CLOSE;
    my @signatures = $signer->signatures;
    die "Mail::DKIM made no signature\n" unless @signatures;
    return { signature => join( '', map { $_->as_string . "\015\012" } @signatures ) };
}

sub read_stdin {
    binmode STDIN;
    local $/;
    return scalar <STDIN>;
}

sub serve {
    binmode STDIN;
    binmode STDOUT;
    $| = 1;
    while ( defined( my $line = <STDIN> ) ) {
        my $request = $JSON->decode($line);
        my $message = '';
        while ( length($message) < $request->{length} ) {
            my $got = read( STDIN, $message, $request->{length} - length($message), length($message) );
            die "end of input inside a message\n" unless $got;
        }
        my $command = $request->{command} // '';
        my $answer  = eval {
                $command eq 'verify' ? verify( $message, $request->{options} )
              : $command eq 'sign'   ? sign( $message, $request->{options} )
              :                        die "unknown command '$command'\n";
        } // { error => "$@" };
        print $JSON->encode($answer), "\n";
    }
}

my $command = shift @ARGV // '';
my %opt     = ( nameserver => '127.0.0.1', port => 53, type => 'dkim' );
GetOptionsFromArray( \@ARGV, \%opt, 'nameserver=s', 'port=i', 'strict', 'type=s', 'algorithm=s',
    'method=s', 'domain=s', 'selector=s', 'key=s', 'headers=s', 'timestamp=i', 'identity=s' )
  or die "usage: see the comment at the top of $0\n";
use_nameserver( $opt{nameserver}, $opt{port} );

if ( $command eq 'verify' ) {
    print $JSON->encode( verify( read_stdin(), \%opt ) ), "\n";
}
elsif ( $command eq 'sign' ) {
    binmode STDOUT;
    print sign( read_stdin(), \%opt )->{signature};
}
elsif ( $command eq 'serve' ) {
    serve();
}
else {
    die "usage: $0 verify|sign|serve [options] (see the comment at the top)\n";
}
