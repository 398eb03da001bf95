#!/usr/bin/perl
# Sign the message on standard input with Perl's Mail::DKIM::Signer and print only the new
# signature field (DKIM-Signature, or DomainKey-Signature with --type domainkeys), CRLF-terminated.
#
# Usage: mail_dkim_sign.pl --type dkim|domainkeys --algorithm rsa-sha256 --method relaxed/simple
#            --domain example.com --selector sel --key private.pem [--headers from:to:subject]
#            [--timestamp N] [--identity user@example.com] < message
# DomainKeys takes --algorithm rsa-sha1 and --method nofws or simple; without --headers a
# DomainKey-Signature has no h= tag (it signs every header field) and a DKIM-Signature signs
# Mail::DKIM's default set. The message must have CRLF line endings.
use strict;
use warnings;

use Getopt::Long;
use Mail::DKIM::Signer;
use Mail::DKIM::Signature;
use Mail::DKIM::DkSignature;
use Mail::DKIM::TextWrap;    # loaded, Mail::DKIM folds the fields it makes (as dkimsign.pl does)

my %opt = ( type => 'dkim' );
GetOptions( \%opt, 'type=s', 'algorithm=s', 'method=s', 'domain=s', 'selector=s', 'key=s',
    'headers=s', 'timestamp=i', 'identity=s' )
  or die "usage: see the comment at the top of $0\n";
foreach my $required (qw(algorithm method domain selector key)) {
    die "$0: --$required is required\n" unless defined $opt{$required};
}
die "$0: --type must be dkim or domainkeys\n" unless $opt{type} =~ /\A(?:dkim|domainkeys)\z/;

my $policy = sub {
    my $signer = shift;
    my %fields = (
        Algorithm => $opt{algorithm},
        Method    => $opt{method},
        Domain    => $opt{domain},
        Selector  => $opt{selector},
    );
    if ( $opt{type} eq 'domainkeys' ) {
        $fields{Headers} = $opt{headers} if defined $opt{headers};
        $signer->add_signature( Mail::DKIM::DkSignature->new(%fields) );
    }
    else {
        $fields{Headers}   = $opt{headers} // $signer->headers;
        $fields{Timestamp} = $opt{timestamp} // time;
        $fields{Identity}  = $opt{identity} if defined $opt{identity};
        $signer->add_signature( Mail::DKIM::Signature->new(%fields) );
    }
    return;
};

binmode STDIN;
my $message = do { local $/; <STDIN> };

my $signer = Mail::DKIM::Signer->new( Policy => $policy, KeyFile => $opt{key} );
$signer->PRINT($message);
$signer->CLOSE;

my @signatures = $signer->signatures;
die "$0: Mail::DKIM made no signature\n" unless @signatures;
binmode STDOUT;
print $_->as_string, "\015\012" foreach @signatures;
